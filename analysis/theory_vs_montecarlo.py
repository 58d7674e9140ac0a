"""Theory vs Monte Carlo: the agreement table and figure of docs/theory.md.

    python analysis/theory_vs_montecarlo.py [--quick] [--out docs/figures]

For each network, rule and compression: the exact (chains) or approximate (DAGs) theory for
Bernoulli masks next to Monte Carlo with Bernoulli and exact-count masks; z = (MC - theory) / SE.
Writes theory_vs_mc.md (the table) and theory_vs_mc.png into --out.
"""

import argparse
import os

import matplotlib.pyplot as plt
import numpy as np

import connsim
from connsim.montecarlo import monte_carlo
from connsim.plots import plot_compression
from connsim.theory import predict


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=os.path.join("docs", "figures"))
    ap.add_argument("--seed", type=int, default=2023)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.quick:
        nets, samples, comps = ["lenet-300-100", "resnet-20"], 200, [10, 100, 1000]
    else:
        nets, samples = ["lenet-300-100", "lenet-5", "vgg-19", "resnet-20", "resnet-18"], 2000
        comps = [10, 100, 1000, 10_000]
    rules = ["uniform", "igq"]
    lines = [f"Seed {args.seed}; {samples} Monte Carlo samples per point (fewer for compression "
             "10 on the large nets: see n).", "",
             "| network | rule | compression | theory E[eff] | MC Bernoulli (± SE) | z | "
             "MC exact-count (± SE) | theory P(disc) | MC P(disc) [95 % CI] | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fig_nets = [n for n in nets if n in ("lenet-300-100", "vgg-19", "resnet-20")]
    fig, axes = plt.subplots(1, len(fig_nets), figsize=(5.2 * len(fig_nets), 4.4),
                             constrained_layout=True)
    axes = np.atleast_1d(axes)
    for name in nets:
        arch = connsim.get_arch(name)
        curves = {}
        for rule in rules:
            mcx, mcy, mlo, mhi = [], [], [], []
            for k, c in enumerate(comps):
                q = connsim.quota(arch, rule, 1 / c)
                p = predict(arch, q)
                n = samples if (c > 10 or arch.total_params < 10**6) else min(samples, 200)
                seed = np.random.SeedSequence([args.seed, k])
                mc = monte_carlo(arch, q, samples=n, rng=seed)
                ex = monte_carlo(arch, q, samples=n, rng=seed, mask_model="exact")
                z = ((mc.mean_effective_params - p.expected_effective_params) / mc.stderr
                     if mc.stderr > 0 else 0.0)
                lo, hi = mc.p_disconnected_ci
                tag = "" if p.exact else " (approximate)"
                lines.append(
                    f"| {name}{tag} | {rule} | {c:g} | {p.expected_effective_params:.6g} | "
                    f"{mc.mean_effective_params:.6g} ± {mc.stderr:.3g} | {z:+.2f} | "
                    f"{ex.mean_effective_params:.6g} ± {ex.stderr:.3g} | "
                    f"{p.p_disconnected:.3g} | {mc.p_disconnected:.3g} [{lo:.3g}, {hi:.3g}] | "
                    f"{n} |")
                print(lines[-1], flush=True)
                centre, low, high = mc.effective_compression_band(z=2.0)
                mcx.append(c)
                mcy.append(centre)
                mlo.append(low)
                mhi.append(high)
            grid = np.geomspace(comps[0] / 2, comps[-1] * 2, 50)
            th = [predict(arch, connsim.quota(arch, rule, 1 / c)).effective_compression
                  for c in grid]
            curves[rule] = {"compression": grid, "effective_compression": th,
                            "mc_compression": mcx, "mc_effective_compression": mcy,
                            "mc_lo": mlo, "mc_hi": mhi}
        if name in fig_nets:
            label = name + ("" if arch.is_chain else " (residual: exact theory)")
            plot_compression(curves, ax=axes[fig_nets.index(name)], title=label)
    with open(os.path.join(args.out, "theory_vs_mc.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    fig.savefig(os.path.join(args.out, "theory_vs_mc.png"), dpi=130)
    print(f"wrote {args.out}/theory_vs_mc.md and .png")


if __name__ == "__main__":
    main()
