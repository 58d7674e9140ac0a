"""Granularity study: weight vs kernel vs channel pruning at initialisation, intelligent (SNIP,
SynFlow) vs random, on LeNet-5 / MNIST (1x28x28).

    python analysis/granularity_study.py [--quick] [--out docs/figures]

For each granularity, method and keep-fraction of groups: the fraction of weights kept (direct),
the effective density, and the test accuracy after training. Writes granularity.md.
"""

import argparse
import os

import connsim
from connsim.pruning import prune
from connsim.trainer.data import load_mnist
from connsim.trainer.loop import TrainConfig, train


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=os.path.join("docs", "figures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_mnist()
    arch = connsim.get_arch("lenet-5", input_shape=data.input_shape)
    if args.quick:
        fractions, cfg, methods = [0.1], TrainConfig(iterations=50, batch_size=128, lr=0.1), \
            ["random", "snip"]
    else:
        fractions, cfg = [0.2, 0.05], TrainConfig(epochs=2, batch_size=128, lr=0.1)
        methods = ["random", "snip", "synflow"]
    lines = ["| granularity | method | kept groups | direct density | effective density | "
             "test accuracy |", "|---|---|---|---|---|---|"]
    for gran in ("weight", "kernel", "channel"):
        for method in methods:
            for f in fractions:
                res = prune(arch, method, f, granularity=gran, scope="global", data=data, n_batches=2,
                            rounds=20, rng=0)
                m = res.measurement
                acc = train(arch, data, res.masks, cfg).test_accuracy
                lines.append(f"| {gran} | {method} | {res.group_fraction:.3g} | "
                             f"{m.density:.4g} | {m.effective_density:.4g} | {acc:.4f} |")
                print(lines[-1], flush=True)
    with open(os.path.join(args.out, "granularity.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/granularity.md")


if __name__ == "__main__":
    main()
