"""Accuracy vs direct and vs effective compression on LeNet-300-100 / MNIST.

    python analysis/accuracy_vs_compression.py [--quick] [--out docs/figures]

Random pruning under uniform, ERK and IGQ quotas and SynFlow, with direct and effective targets,
each mask trained with the same schedule. Writes accuracy_compression.md and .png.
"""

import argparse
import math
import os

import matplotlib.pyplot as plt

import connsim
from connsim.pruning import prune
from connsim.trainer.data import load_mnist
from connsim.trainer.loop import TrainConfig, train

METHODS = [("random", "uniform"), ("random", "erk"), ("random", "igq"), ("synflow", None)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=os.path.join("docs", "figures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_mnist()
    arch = connsim.get_arch("lenet-300-100", input_shape=data.input_shape)
    if args.quick:
        comps, cfg, rounds = [100], TrainConfig(iterations=100, batch_size=100, lr=0.1), 10
    else:
        comps, cfg, rounds = [10, 100, 1000], TrainConfig(epochs=6, batch_size=100, lr=0.1), 100
    lines = ["| method | target | requested | direct compression | effective compression | "
             "test accuracy |", "|---|---|---|---|---|---|"]
    results = []
    for method, rule in METHODS:
        label = f"{method} ({rule})" if rule else method
        for target in ("direct", "effective"):
            for c in comps:
                res = prune(arch, method, 1 / c, scope="layerwise" if rule else "global",
                            rule=rule or "uniform", target=target, rounds=rounds, rng=0)
                m = res.measurement
                acc = train(arch, data, res.masks, cfg).test_accuracy
                results.append((label, target, m.compression, m.effective_compression, acc))
                lines.append(f"| {label} | {target} | {c:g} | {m.compression:.4g} | "
                             f"{m.effective_compression:.4g} | {acc:.4f} |")
                print(lines[-1], flush=True)
    with open(os.path.join(args.out, "accuracy_compression.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), constrained_layout=True)
    for k, (method, rule) in enumerate(METHODS):
        label = f"{method} ({rule})" if rule else method
        for target, marker in (("direct", "o-"), ("effective", "s--")):
            rows = [r for r in results if r[0] == label and r[1] == target]
            for ax, col in ((axes[0], 2), (axes[1], 3)):
                xs = [r[col] if math.isfinite(r[col]) else float("nan") for r in rows]
                ax.plot(xs, [r[4] for r in rows], marker, color=f"C{k}",
                        label=f"{label}, {target} target")
    for ax, what in zip(axes, ("direct", "effective"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(f"{what} compression")
        ax.set_ylabel("test accuracy")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=7)
    axes[0].set_title("LeNet-300-100 / MNIST: accuracy vs direct compression")
    axes[1].set_title("... vs effective compression")
    fig.savefig(os.path.join(args.out, "accuracy_compression.png"), dpi=130)
    print(f"wrote {args.out}/accuracy_compression.md and .png")


if __name__ == "__main__":
    main()
