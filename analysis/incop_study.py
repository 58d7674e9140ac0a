"""InCoP study: does a flow-based stopping rule save IMP's retraining epochs at equal accuracy?

    python analysis/incop_study.py [--quick] [--out docs/figures] [--runs runs/incop] [--workers 2]

Arms (Gharatappeh & Sekeh 2025, ``docs/incop.md``): LTH (20 % of each layer per round) and SAP with
(p, q) = (1, 2) and (0.5, 1), all with a fixed K_max iterations per round and no weight decay;
InCoP = SAP with the flow+accuracy rule, information flow (IF, eps 1) or gradient flow (GF, eps
0.5), weight decay 5e-4, for each (p, q); and the ablation of InCoP-IF / GF (1, 2): flow rule only,
accuracy rule only. LeNet-300-100 and LeNet-5 on MNIST at CPU scale: a fixed subset of the
training set (a tenth held out for validation), warm-up W iterations of one epoch, T rounds,
K_max iterations, SGD lr 0.01 without momentum, batch 64, 3 seeds. Every run is a resumable
``connsim.imp`` folder under --runs: re-running the script resumes where it stopped.

Writes ``incop.md`` (per arm, mean +- std over seeds: final accuracy, epochs incl. warm-up and
statistic passes, final direct and effective density, accuracy and epochs at a density all arms
reach) and figures: accuracy, epochs and remaining weights per round; SAP's measured density
trajectory against the analytic prediction; kappa_l against the active units of its layers.
"""

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process: --workers sets the parallelism

import numpy as np  # noqa: E402

ARMS = {  # name: pruner, (p, q), stop, flow, eps, weight decay
    "LTH": ("lth", None, "cap", "if", 1.0, 0.0),
    "SAP(1,2)": ("sap", (1, 2), "cap", "if", 1.0, 0.0),
    "SAP(0.5,1)": ("sap", (0.5, 1), "cap", "if", 1.0, 0.0),
    "InCoP-IF(1,2)": ("sap", (1, 2), "flow+accuracy", "if", 1.0, 5e-4),
    "InCoP-IF(0.5,1)": ("sap", (0.5, 1), "flow+accuracy", "if", 1.0, 5e-4),
    "InCoP-GF(1,2)": ("sap", (1, 2), "flow+accuracy", "gf", 0.5, 5e-4),
    "InCoP-GF(0.5,1)": ("sap", (0.5, 1), "flow+accuracy", "gf", 0.5, 5e-4),
    "IF only(1,2)": ("sap", (1, 2), "flow", "if", 1.0, 5e-4),
    "GF only(1,2)": ("sap", (1, 2), "flow", "gf", 0.5, 5e-4),
    "accuracy only(1,2)": ("sap", (1, 2), "accuracy", "if", 1.0, 5e-4),
    # probes with thresholds below the distances the rounds reach (the defaults always hold)
    "IF only eps 2e-4(1,2)": ("sap", (1, 2), "flow", "if", 2e-4, 5e-4),
    "GF only eps 5e-4(1,2)": ("sap", (1, 2), "flow", "gf", 5e-4, 5e-4),
}
NETS = ("lenet-300-100", "lenet-5")


def _slug(text):
    return "".join(c if c.isalnum() else "_" for c in text)


def subset(data, size):
    """The first ``size`` examples of a seeded permutation of the training set."""
    from connsim.trainer.data import Dataset

    if size >= len(data.y_train):
        return data
    pick = np.sort(np.random.default_rng(0).permutation(len(data.y_train))[:size])
    return Dataset(data.name, data.x_train[pick], data.y_train[pick], data.x_test, data.y_test,
                   data.classes)


def run_arm(net, arm, seed, scale, runs):
    """One (network, arm, seed) run; resumes its folder. Returns the folder."""
    import connsim
    from connsim.imp import imp
    from connsim.sap import SapSettings
    from connsim.stopping import StopRule
    from connsim.trainer.data import load_mnist
    from connsim.trainer.loop import TrainConfig

    pruner, pq, stop, flow, eps, wd = ARMS[arm]
    data = subset(load_mnist(), scale["train_size"])
    arch = connsim.get_arch(net, input_shape=data.input_shape)
    out = os.path.join(runs, net, _slug(arm), f"seed{seed}")
    rule = StopRule(stop=stop, flow=flow, eps=eps, max_iterations=scale["max_iterations"],
                    warmup_iterations=scale["warmup"], flow_samples=scale["flow_samples"])
    config = TrainConfig(epochs=1, batch_size=64, lr=0.01, schedule="constant", momentum=0.0,
                         weight_decay=wd, seed=seed)
    imp(arch, data, out, levels=scale["rounds"] - 1, fraction=0.2, scope="layerwise",
        config=config, pruner=pruner, sap=SapSettings(*pq) if pq else None, stop=rule)
    return out


def load(folder):
    with open(os.path.join(folder, "levels.json")) as f:
        levels = json.load(f)
    with open(os.path.join(folder, "warmup.json")) as f:
        warm = json.load(f)
    return levels, warm


def overhead(record, n_train, accuracy_rule):
    """Statistic passes (and validation passes where the accuracy rule uses them) in training
    epochs, a training example counting three forward passes, from the raw counters."""
    forward = record["statistic_forward_examples"] + 2 * record["statistic_backward_examples"]
    if accuracy_rule:
        forward += record["validation_examples"]
    return forward / (3 * n_train)


def curves(levels, warm, arm, n_train):
    """Per round: test accuracy, cumulative epochs (warm-up and overheads included), densities."""
    rule = "accuracy" in ARMS[arm][2]
    epochs = warm["epochs"] + overhead(warm, n_train, rule) + np.cumsum(
        [r["epochs"] + overhead(r, n_train, rule) for r in levels])
    return {"accuracy": np.array([r["test_accuracy"] for r in levels]),
            "epochs": epochs,
            "direct": np.array([r["direct_density"] for r in levels]),
            "effective": np.array([r["effective_density"] for r in levels]),
            "iterations": np.array([r["iterations"] for r in levels]),
            "stopped_by": [r["stopped_by"] for r in levels]}


def at_density(c, density):
    """Accuracy and cumulative epochs where the direct density first reaches ``density``
    (linear interpolation in log density between rounds)."""
    d = np.log(c["direct"])
    x = np.log(density)
    k = int(np.argmax(d <= x + 1e-12))
    if d[k] > x + 1e-12:
        return np.nan, np.nan
    if k == 0 or d[k] == d[k - 1]:
        return c["accuracy"][k], c["epochs"][k]
    t = (d[k - 1] - x) / (d[k - 1] - d[k])
    return tuple((1 - t) * c[key][k - 1] + t * c[key][k] for key in ("accuracy", "epochs"))


def pm(values, digits=4):
    v = np.asarray(values, dtype=float)
    return f"{np.nanmean(v):.{digits}g} ± {np.nanstd(v):.{digits - 2}g}" if len(v) > 1 \
        else f"{v[0]:.{digits}g}"


def table(results, nets, seeds):
    lines = []
    for net in nets:
        arms = [a for a in ARMS if (net, a) in results]
        matched = max(c["direct"][-1] for a in arms for c in results[(net, a)])
        lines += [f"### {net}", "",
                  f"Matched density: {matched:.4g} (the highest final direct density of any run; "
                  "accuracy and epochs interpolated where each run reaches it).", "",
                  "| arm | final test acc. | total epochs | final direct density | "
                  "final effective density | rounds stopped by | acc. at matched density | "
                  "epochs to matched density |", "|---|---|---|---|---|---|---|---|"]
        for arm in arms:
            cs = results[(net, arm)]
            stops = {}
            for c in cs:
                for s in c["stopped_by"]:
                    stops[s] = stops.get(s, 0) + 1
            match = [at_density(c, matched) for c in cs]
            lines.append(
                f"| {arm} | {pm([c['accuracy'][-1] for c in cs])} | "
                f"{pm([c['epochs'][-1] for c in cs], 3)} | {pm([c['direct'][-1] for c in cs])} | "
                f"{pm([c['effective'][-1] for c in cs])} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(stops.items())) + " | "
                f"{pm([m[0] for m in match])} | {pm([m[1] for m in match], 3)} |")
        lines.append("")
    lines.append(f"Mean ± std over seeds {', '.join(map(str, seeds))}.")
    return "\n".join(lines) + "\n"


def figures(results, nets, runs, out, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from connsim.sap import sap_trajectory

    fig, axes = plt.subplots(len(nets), 3, figsize=(15, 4.2 * len(nets)), squeeze=False)
    for row, net in zip(axes, nets, strict=True):
        for k, arm in enumerate(a for a in ARMS if (net, a) in results):
            cs = results[(net, arm)]
            rounds = np.arange(len(cs[0]["accuracy"]))
            color = plt.get_cmap("tab20")(k % 20)  # 12 arms: more than the 10 default colours
            for ax, key in zip(row[:2], ("accuracy", "epochs"), strict=True):
                v = np.array([c[key] for c in cs])
                ax.plot(rounds, v.mean(0), color=color, label=arm)
                ax.fill_between(rounds, v.mean(0) - v.std(0), v.mean(0) + v.std(0), color=color,
                                alpha=0.15)
            for key, style in (("direct", "-"), ("effective", ":")):
                v = np.array([c[key] for c in cs])
                row[2].plot(rounds, v.mean(0), style, color=color)
        row[0].set(title=f"{net}: test accuracy", xlabel="round")
        row[1].set(title="cumulative epochs (warm-up, statistics included)", xlabel="round")
        row[2].set(title="remaining weights (solid direct, dotted effective)", xlabel="round",
                   yscale="log")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "incop_rounds.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4.2), squeeze=False)
    for ax, net in zip(axes[0], nets, strict=True):
        for k, (arm, pq) in enumerate((("SAP(1,2)", (1, 2)), ("SAP(0.5,1)", (0.5, 1)))):
            if (net, arm) not in results:
                continue
            cs = results[(net, arm)]
            rounds = np.arange(len(cs[0]["direct"]))
            for c in cs:
                ax.plot(rounds, c["direct"], "o", color=f"C{k}", ms=3)
            ax.plot(rounds, sap_trajectory(len(rounds) - 1, p=pq[0], q=pq[1]), "-", color=f"C{k}",
                    label=f"{arm}: Gaussian law")
            weights = _rewind_weights(os.path.join(runs, net, _slug(arm), "seed0"))
            if weights is not None:
                ax.plot(rounds, sap_trajectory(len(rounds) - 1, weights, p=pq[0], q=pq[1]), "--",
                        color=f"C{k}", label=f"{arm}: warm-up weights' law")
        ax.set(title=f"{net}: SAP density (dots: measured)", xlabel="round", ylabel="density",
               yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "incop_sap_trajectory.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4.2), squeeze=False)
    lines = []
    for ax, net in zip(axes[0], nets, strict=True):
        sweep = kappa_sweep(net, os.path.join(runs, net, _slug("LTH"), "seed0"), scale)
        for i, pair in enumerate(sweep["pairs"]):
            ax.plot(sweep["density"], sweep["kappa"][:, i], "o-", color=f"C{i}", ms=3, label=pair)
            ax.plot(sweep["density"], sweep["kappa_active"][:, i], "x:", color=f"C{i}", ms=4)
        ax.set(title=f"{net}: kappa_l (o) and over active units only (x)", xscale="log",
               xlabel="direct density (global magnitude pruning of the warm-up weights)")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
        lines += [f"{net}: density " + ", ".join(f"{d:.3g}" for d in sweep["density"]),
                  "  active-pair share " + "; ".join(
                      ", ".join(f"{v:.3f}" for v in row) for row in sweep["share"].T)]
    fig.tight_layout()
    fig.savefig(os.path.join(out, "incop_kappa_active.png"), dpi=110)
    plt.close(fig)
    return "\n".join(lines)


def kappa_sweep(net, folder, scale):
    """kappa_l of the warm-up weights under global magnitude masks of falling density, beside the
    share of unit pairs that are active in both layers and kappa_l over those pairs only."""
    import connsim
    from connsim.flow import flow_layers, information_flow
    from connsim.imp import prune_survivors
    from connsim.maskio import read_npz
    from connsim.masks import ones_masks
    from connsim.measures import measure
    from connsim.trainer.data import load_mnist
    from connsim.trainer.network import Network

    data = subset(load_mnist(), scale["train_size"])
    arch = connsim.get_arch(net, input_shape=data.input_shape)
    state = read_npz(os.path.join(folder, "rewind.npz"))
    layers = flow_layers(arch)
    x = data.x_train[:scale["flow_samples"]]
    out = {"density": [], "kappa": [], "kappa_active": [], "share": [],
           "pairs": [f"{a}→{b}" for a, b in zip(layers, layers[1:], strict=False)]}
    masks = ones_masks(arch)
    for _ in range(scale["sweep_steps"]):
        model = Network(arch, masks, rng=0)
        model.load_state_dict(state)
        kappa = information_flow(model, x)
        m = measure(arch, masks)
        active = {lm.name: lm.active_out / lm.units_out for lm in m.layers}
        share = np.array([active[a] * active[b] for a, b in zip(layers, layers[1:], strict=False)])
        out["density"].append(m.density)
        out["kappa"].append(kappa)
        out["share"].append(share)
        out["kappa_active"].append(np.where(share > 0, kappa / np.maximum(share, 1e-12), np.nan))
        weights = {n: state[f"{n}.weight"] for n in arch.layer_names}
        masks = prune_survivors(arch, weights, masks, 0.5)
    return {k: np.array(v) if k != "pairs" else v for k, v in out.items()}


def _rewind_weights(folder):
    from connsim.maskio import read_npz

    path = os.path.join(folder, "rewind.npz")
    if not os.path.exists(path):
        return None
    state = read_npz(path)
    return np.concatenate([v.ravel() for k, v in state.items()
                           if k.endswith(".weight") and ".bn." not in k and v.ndim > 1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    ap.add_argument("--out", default=os.path.join("docs", "figures"), help="table and figures")
    ap.add_argument("--runs", help="run folders (default: runs/incop, or OUT/incop_runs with --quick)")
    ap.add_argument("--workers", type=int, default=1, help="processes (one thread each)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--skip", default="", help="NET:ARM pairs not to run, separated by ;")
    args = ap.parse_args()
    runs = args.runs or (os.path.join(args.out, "incop_runs") if args.quick
                         else os.path.join("runs", "incop"))
    os.makedirs(args.out, exist_ok=True)
    nets = tuple(args.nets.split(","))
    if args.quick:
        scale = {"train_size": 600, "warmup": 1, "rounds": 3, "max_iterations": 2,
                 "flow_samples": 300, "sweep_steps": 3}
        seeds = (0,)
    else:
        scale = {"train_size": 20000, "warmup": 3, "rounds": 8, "max_iterations": 5,
                 "flow_samples": 5000, "sweep_steps": 12}
        seeds = (0, 1, 2)
    skip = {tuple(pair.split(":", 1)) for pair in args.skip.split(";") if pair}
    jobs = [(net, arm, seed) for net in nets for arm in ARMS for seed in seeds
            if (net, arm) not in skip]
    results = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(run_arm, *job, scale, runs): job for job in jobs}
        for k, fut in enumerate(as_completed(futures), 1):
            net, arm, seed = futures[fut]
            levels, warm = load(fut.result())
            n_train = scale["train_size"] - round(0.1 * scale["train_size"])
            results.setdefault((net, arm), []).append(curves(levels, warm, arm, n_train))
            c = results[(net, arm)][-1]
            print(f"[{k}/{len(jobs)}] {net} {arm} seed {seed}: acc {c['accuracy'][-1]:.4f}, "
                  f"density {c['direct'][-1]:.4g}, epochs {c['epochs'][-1]:.1f}", flush=True)
    text = table(results, nets, seeds)
    with open(os.path.join(args.out, "incop.md"), "w") as f:
        f.write(text)
    sweep = figures(results, nets, runs, args.out, scale)
    with open(os.path.join(args.out, "incop.md"), "a") as f:
        f.write("\nkappa sweep (global magnitude pruning of the seed-0 warm-up weights):\n\n"
                "```\n" + sweep + "\n```\n")
    print(text)
    print(sweep)
    print(f"wrote {args.out}/incop.md and incop_*.png", file=sys.stderr)


if __name__ == "__main__":
    main()
