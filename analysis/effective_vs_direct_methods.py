"""Effective vs direct compression per pruning method at initialisation (no training).

    python analysis/effective_vs_direct_methods.py [--quick] [--out docs/figures]

Methods: random (uniform and IGQ quotas), magnitude, SNIP (one batch; MNIST for LeNet-300-100,
a synthetic batch of the right shape for VGG-19, since CIFAR-100 is not shipped), SynFlow (100
rounds). Writes methods_effective.md (table) and methods_effective.png.
"""

import argparse
import os

import matplotlib.pyplot as plt
import numpy as np

import connsim
from connsim.plots import plot_compression
from connsim.pruning import prune
from connsim.trainer.data import load_mnist, make_synthetic

METHODS = [("random", "uniform"), ("random", "igq"), ("magnitude", None), ("snip", None),
           ("synflow", None)]


def data_for(arch, name):
    if name == "lenet-300-100":
        return load_mnist().reshaped(arch.input_shape)
    return make_synthetic(arch.input_shape, arch.output.channels, n_train=256, n_test=8, seed=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=os.path.join("docs", "figures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.quick:
        nets, comps, rounds = ["lenet-300-100"], [10, 100], 10
    else:
        nets, comps, rounds = ["lenet-300-100", "vgg-19"], [10, 100, 1000, 10_000], 100
    lines = ["| network | method | direct compression | effective compression | "
             "effective / direct |", "|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 4.5),
                             constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, nets, strict=True):
        arch = connsim.get_arch(name)
        data = data_for(arch, name)
        curves = {}
        for method, rule in METHODS:
            label = f"{method} ({rule})" if rule else method
            xs, ys = [], []
            for c in comps:
                res = prune(arch, method, 1 / c, scope="layerwise" if rule else "global",
                            rule=rule or "uniform", data=data, rounds=rounds, rng=0)
                m = res.measurement
                xs.append(m.compression)
                ys.append(m.effective_compression)
                ratio = m.effective_compression / m.compression
                lines.append(f"| {name} | {label} | {m.compression:.4g} | "
                             f"{m.effective_compression:.4g} | {ratio:.3g} |")
                print(lines[-1], flush=True)
            curves[label] = {"compression": xs, "effective_compression": ys}
        plot_compression(curves, ax=ax, title=f"{name}: pruning at initialisation",
                         kind="measured")
    with open(os.path.join(args.out, "methods_effective.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    fig.savefig(os.path.join(args.out, "methods_effective.png"), dpi=130)
    print(f"wrote {args.out}/methods_effective.md and .png")


if __name__ == "__main__":
    main()
