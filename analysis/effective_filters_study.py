"""Effective filters study: how many filters are really independent, and does pruning within
that redundancy beat L1 and random filter pruning?

    python analysis/effective_filters_study.py [--quick] [--out docs/figures] [--runs DIR]
        [--workers 2] [--nets lenet-5,...]

For LeNet-300-100 and LeNet-5 trained on MNIST (3 seeds; one and tiny sizes with --quick) and
VGG-11 / ResNet-20 at a small size, trained for 60 iterations on a synthetic 3x32x32 task (one
seed, ranks only: CIFAR needs a download this script does not assume; --quick trains them for 3
iterations), using
``connsim.redundancy`` (``docs/redundancy.md``):

1. rank saturation: effective filters per layer as the sample grows, trained and at
   initialisation, at tolerances 1e-2 and 1e-3;
2. the estimated maximum compression at a ladder of tolerances;
3. pruning at a grid of parameter compressions, every arm removing whole units and freeing the
   same parameters (to within one unit, counted exactly): hierarchical (layer budgets capped by
   the redundancy at the smallest tolerance of the ladder that allows the compression; QR
   order), hierarchical with least-squares compensation, L1 with hierarchical's layer budgets, L1
   at equal shares of every layer, random at equal shares; test accuracy right after pruning and
   after the same fine-tuning.

Each (network, seed) writes one JSON file under --runs (default OUT/effective_filters_runs), with
its settings: re-running the script skips what is done with the same settings. Writes
``effective_filters.md`` (tables, mean +- std over seeds) and the figures
``effective_filters_saturation.png`` and ``effective_filters_pruning.png``.
"""

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process: --workers sets the parallelism

import numpy as np  # noqa: E402

ARMS = ("hierarchical", "hierarchical + compensation", "L1, hierarchical budgets",
        "L1, equal shares", "random, equal shares")
TOLS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3, 0.5)  # the ladder of rank tolerances
SHOWN_TOLS = (1e-2, 1e-3)  # the saturation figure's tolerances
FINETUNE = {"batch_size": 64, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}

MNIST_FULL = {"data": "mnist", "seeds": 3, "lr": 0.05, "train": {"epochs": 5},
              "finetune": {"epochs": 1}, "sizes": (128, 256, 512, 1024, 2048, 4096, 8192),
              "sample": 4096, "compressions": (1.25, 1.5, 2, 3, 5, 10)}
MNIST_QUICK = {"data": "mnist", "seeds": 1, "lr": 0.05, "train": {"iterations": 20},
               "finetune": {"iterations": 5}, "sizes": (32, 64, 128), "sample": 128,
               "compressions": (1.25, 2)}
SMALL = {  # VGG-11 and ResNet-20, ranks only; trained to ~100 % on the synthetic task
    "vgg-11": {"data": "synthetic", "seeds": 1, "lr": 0.002, "train": {"iterations": 60},
               "finetune": None, "sizes": (8, 16, 32), "sample": 32, "compressions": ()},
    "resnet-20": {"data": "synthetic", "seeds": 1, "lr": 0.1, "train": {"iterations": 60},
                  "finetune": None, "sizes": (16, 32, 64, 128), "sample": 128,
                  "compressions": ()},
}
SMALL_QUICK = {name: {**setup, "train": {"iterations": 3}} for name, setup in SMALL.items()}
FULL = {"lenet-300-100": MNIST_FULL, "lenet-5": MNIST_FULL, **SMALL}
QUICK = {"lenet-300-100": MNIST_QUICK, "lenet-5": MNIST_QUICK, **SMALL_QUICK}


def dataset(name, quick):
    from connsim.trainer.data import Dataset, load_mnist, make_synthetic

    if name == "synthetic":
        n = 256 if quick else 2048
        return make_synthetic((3, 32, 32), classes=10, n_train=n, n_test=n // 4, noise=1.0)
    data = load_mnist()
    if quick:  # a seeded subset of 600 training and 1,000 test images
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(len(data.y_train))[:600], rng.permutation(len(data.y_test))[:1000]
        data = Dataset(data.name, data.x_train[tr], data.y_train[tr], data.x_test[te],
                       data.y_test[te], data.classes)
    return data


def l1_order(arch, state, masks, name):
    """Units of ``name`` by increasing L1 norm of their kept incoming weights."""
    w = np.abs(np.asarray(state[f"{name}.weight"]) * masks[name])
    return np.argsort(w.reshape(len(w), -1).sum(axis=1), kind="stable")


def accuracy(arch, masks, state, data):
    from connsim.trainer.loop import evaluate
    from connsim.trainer.network import Network

    net = Network(arch, masks, rng=0)
    net.load_state_dict(state)
    return evaluate(net, data.x_test, data.y_test)


def finetune_config(ft, seed):
    """The fine-tuning every arm (and the unpruned reference) gets."""
    from connsim.trainer.loop import TrainConfig

    return TrainConfig(**ft, **FINETUNE, schedule="constant", seed=seed)


def prune_arms(arch, state, reds, compression, data, ft, seed):
    """Every arm at one compression: achieved compression, accuracy before and after
    fine-tuning."""
    from connsim.masks import ones_masks
    from connsim.redundancy import (
        freed_parameters,
        hierarchical_prune,
        prune_units,
        removal_masks,
        total_parameters,
    )
    from connsim.trainer.loop import train

    dense = ones_masks(arch)
    params = total_parameters(arch, dense)
    layers = [lr.name for lr in next(iter(reds.values())).layers]
    l1 = {name: l1_order(arch, state, dense, name) for name in layers}
    rng = np.random.default_rng(seed)
    shuffled = {name: rng.permutation(arch[name].channels) for name in layers}
    tol = next((t for t in TOLS if reds[t].max_compression >= compression), None)
    out = {}
    if tol is not None:
        hier = hierarchical_prune(arch, reds[tol], compression, state=state, compensate=True)
        counts = {k: int(v.sum()) for k, v in hier.removed.items()}
        budget = {k: np.isin(np.arange(len(v)), l1[k][:counts[k]]) for k, v in
                  hier.removed.items()}
        out["hierarchical"] = (hier.removed, state, tol)
        out["hierarchical + compensation"] = (hier.removed, hier.state, tol)
        out["L1, hierarchical budgets"] = (budget, state, tol)
    out["L1, equal shares"] = (prune_units(arch, l1, compression)[0], state, None)
    out["random, equal shares"] = (prune_units(arch, shuffled, compression)[0], state, None)
    config = finetune_config(ft, seed)
    rows = {}
    for arm, (removed, start, used) in out.items():
        masks = removal_masks(arch, removed, dense)
        tuned = train(arch, data, masks, config, initial_state=start)
        rows[arm] = {"tol": used, "removed": {k: int(v.sum()) for k, v in removed.items()},
                     "compression": params / (params - freed_parameters(arch, removed, dense)),
                     "pruned": accuracy(arch, masks, start, data),
                     "finetuned": tuned.test_accuracy}
    return rows


def run_one(net, seed, quick, runs):
    """One (network, seed): train, measure ranks, prune. Returns the path of its JSON."""
    import connsim
    from connsim.redundancy import at_tolerance, redundancy
    from connsim.trainer.loop import TrainConfig, Trainer, train

    setup = (QUICK if quick else FULL)[net]
    path = os.path.join(runs, f"{net}_seed{seed}{'_quick' if quick else ''}.json")
    settings = json.loads(json.dumps({**setup, "tols": TOLS, "arms": ARMS,
                                      "finetune_config": FINETUNE}))
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f).get("settings") == settings:
                return path
    data = dataset(setup["data"], quick)
    arch = connsim.get_arch(net, input_shape=data.input_shape, classes=data.classes)
    config = TrainConfig(**setup["train"], batch_size=64, lr=setup["lr"], schedule="constant",
                         momentum=0.9, weight_decay=5e-4, seed=seed)
    trainer = Trainer(arch, data, None, config, log_test=False)
    init = trainer.network.state_dict()
    trainer.run()
    result = trainer.result()
    trained = result.network.state_dict()
    pick = np.random.default_rng(seed).permutation(len(data.y_train))
    x, y = data.x_train[pick], data.y_train[pick]
    record = {"net": net, "seed": seed, "settings": settings, "accuracy": result.test_accuracy,
              "saturation": {}, "max_compression": {}, "layers": {}, "pruning": {}}
    measured = {}  # the trained network's measurement per sample size
    for which, state in (("trained", trained), ("init", init)):
        sat = record["saturation"][which] = []
        for n in setup["sizes"]:
            red = redundancy(arch, state, x[:n], y[:n])
            if which == "trained":
                measured[n] = red
            sat.append({"samples": n, "layers": [lr.to_dict() for lr in red.layers]})
    n = setup["sample"]
    red = measured.get(n) or redundancy(arch, trained, x[:n], y[:n])
    reds = {tol: at_tolerance(arch, red, tol) for tol in TOLS}
    record["max_compression"] = {f"{t:g}": float(r.max_compression) for t, r in reds.items()}
    record["layers"] = [lr.to_dict() for lr in reds[1e-3].layers]
    record["skipped"] = reds[1e-3].skipped
    if setup["finetune"]:  # the unpruned network after the same fine-tuning
        record["dense_finetuned"] = train(arch, data, None, finetune_config(setup["finetune"], seed),
                                          initial_state=trained).test_accuracy
    for c in setup["compressions"]:
        record["pruning"][f"{c:g}"] = prune_arms(arch, trained, reds, c, data,
                                                 setup["finetune"], seed)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    return path


def pm(values, digits=4):
    v = np.asarray(values, dtype=float)
    if np.all(np.isnan(v)):
        return "—"
    return f"{np.nanmean(v):.{digits}g} ± {np.nanstd(v):.{max(digits - 2, 1)}g}" if len(v) > 1 \
        else f"{v[0]:.{digits}g}"


def table(records, nets):
    lines = ["# Effective filters study (generated by analysis/effective_filters_study.py)", ""]
    for net in nets:
        recs = records[net]
        sample = recs[0]["saturation"]["trained"][-1]["samples"]
        lines += [f"## {net}", "",
                  f"Test accuracy of the trained networks: {pm([r['accuracy'] for r in recs])} "
                  f"({len(recs)} seed(s)). Effective filters per layer on {sample} training "
                  "examples (trained; init in brackets), output-eliminated units, the structural "
                  "bound:", "",
                  "| layer | units | tol 1e-2 | tol 1e-3 | tol 1e-4 | energy 0.99 | eliminated "
                  "| structural |", "|---|---|---|---|---|---|---|---|"]
        for k, lay in enumerate(recs[0]["layers"]):
            def col(key, which, k=k, recs=recs):
                last = [r["saturation"][which][-1]["layers"][k] for r in recs]
                return pm([lay[key] if key in lay else lay["ranks"][key] for lay in last], 3)

            cells = [f"{col(t, 'trained')} ({col(t, 'init')})" for t in
                     ("tol=0.01", "tol=0.001", "tol=0.0001", "energy=0.99")]
            lines.append(f"| {lay['name']} | {lay['units']} | " + " | ".join(cells)
                         + f" | {col('eliminated', 'trained')} | {col('structural', 'trained')} |")
        work = recs[0].get("settings", {}).get("sample", "the")
        lines += ["", f"Estimated maximum compression (removing every redundant unit) on {work} "
                  "training examples, by rank tolerance:", "",
                  "| tol | " + " | ".join(recs[0]["max_compression"]) + " |",
                  "|---" * (len(recs[0]["max_compression"]) + 1) + "|",
                  "| max compression | " + " | ".join(
                      pm([r["max_compression"][t] for r in recs], 3)
                      for t in recs[0]["max_compression"]) + " |", ""]
        if recs[0]["pruning"]:
            ref = pm([r.get("dense_finetuned", np.nan) for r in recs])
            lines += ["Test accuracy after pruning whole units to a parameter compression, "
                      "right after pruning / after fine-tuning (tol: the ladder tolerance "
                      f"hierarchical pruning used). Unpruned, after the same fine-tuning: {ref}.",
                      "",
                      "| compression | arm | tol | achieved | pruned | fine-tuned |",
                      "|---|---|---|---|---|---|"]
            for c in recs[0]["pruning"]:
                for arm in ARMS:
                    rows = [r["pruning"][c].get(arm) for r in recs]
                    if not any(rows):
                        lines.append(f"| {c} | {arm} | beyond tol {TOLS[-1]:g} | | | |")
                        continue
                    rows = [row for row in rows if row]
                    tols = sorted({row["tol"] for row in rows if row["tol"] is not None})
                    lines.append(f"| {c} | {arm} | {', '.join(f'{t:g}' for t in tols) or ''} | "
                                 f"{pm([row['compression'] for row in rows], 4)} | "
                                 f"{pm([row['pruned'] for row in rows])} | "
                                 f"{pm([row['finetuned'] for row in rows])} |")
            lines.append("")
        if recs[0].get("skipped"):
            lines += ["Not analysed: " + "; ".join(f"{k} ({v})" for k, v in
                                                     recs[0]["skipped"].items()), ""]
    return "\n".join(lines) + "\n"


def figures(records, nets, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(SHOWN_TOLS), len(nets), figsize=(4.6 * len(nets), 7.4),
                             squeeze=False)
    for col, net in enumerate(nets):
        recs = records[net]
        for row, tol in enumerate(SHOWN_TOLS):
            ax = axes[row][col]
            for k, lay in enumerate(recs[0]["layers"]):
                for which, style in (("trained", "-o"), ("init", ":")):
                    n = [s["samples"] for s in recs[0]["saturation"][which]]
                    share = np.array([[s["layers"][k]["ranks"][f"tol={tol:g}"] / lay["units"]
                                       for s in r["saturation"][which]] for r in recs])
                    ax.plot(n, share.mean(0), style, color=f"C{k % 10}", ms=3,
                            label=lay["name"] if which == "trained" else None)
            ax.set(xscale="log", ylim=(0, 1.05), xlabel="samples",
                   title=f"{net}: r_l / n_l at tol {tol:g}")
            if row == 0:
                ax.legend(fontsize=6, title="solid trained, dotted init", title_fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "effective_filters_saturation.png"), dpi=110)
    plt.close(fig)

    pruned = [net for net in nets if records[net][0]["pruning"]]
    if not pruned:
        return
    fig, axes = plt.subplots(2, len(pruned), figsize=(5.5 * len(pruned), 7.4), squeeze=False)
    for col, net in enumerate(pruned):
        recs = records[net]
        cs = list(recs[0]["pruning"])
        for row, key in enumerate(("pruned", "finetuned")):
            ax = axes[row][col]
            for k, arm in enumerate(ARMS):
                v = np.array([[r["pruning"][c][arm][key] if arm in r["pruning"][c] else np.nan
                               for c in cs] for r in recs])
                x = np.array([float(c) for c in cs])
                ax.errorbar(x, np.nanmean(v, 0), yerr=np.nanstd(v, 0), fmt="-o", ms=3,
                            color=f"C{k}", label=arm, capsize=2)
            ref = [r["dense_finetuned"] for r in recs if "dense_finetuned" in r]
            if key == "finetuned" and ref:
                ax.axhline(np.mean(ref), color="k", lw=1, label="unpruned, same fine-tuning")
            for t, style in ((1e-2, "--"), (1e-1, ":")):
                est = np.mean([r["max_compression"][f"{t:g}"] for r in recs])
                ax.axvline(est, color="gray", ls=style, lw=1,
                           label=f"estimated max compression, tol {t:g}")
            ax.set(xscale="log", xlabel="parameter compression", ylabel="test accuracy",
                   title=f"{net}: " + ("right after pruning" if key == "pruned"
                                       else "after fine-tuning"))
            if col == 0:
                ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "effective_filters_pruning.png"), dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    ap.add_argument("--out", default=os.path.join("docs", "figures"), help="table and figures")
    ap.add_argument("--workers", type=int, default=1, help="processes (one thread each)")
    ap.add_argument("--runs", help="per-run JSON files (default: OUT/effective_filters_runs)")
    ap.add_argument("--nets", default=",".join(FULL))
    args = ap.parse_args()
    nets = tuple(args.nets.split(","))
    unknown = set(nets) - set(FULL)
    if unknown:
        ap.error(f"--nets: unknown {sorted(unknown)}; choose from {', '.join(FULL)}")
    runs = args.runs or os.path.join(args.out, "effective_filters_runs")
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(runs, exist_ok=True)
    setups = QUICK if args.quick else FULL
    jobs = [(net, seed) for net in nets for seed in range(setups[net]["seeds"])]
    records = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(run_one, net, seed, args.quick, runs): (net, seed)
                   for net, seed in jobs}
        for k, fut in enumerate(as_completed(futures), 1):
            net, seed = futures[fut]
            with open(fut.result()) as f:
                records.setdefault(net, []).append(json.load(f))
            print(f"[{k}/{len(jobs)}] {net} seed {seed}", flush=True)
    for net in nets:
        records[net].sort(key=lambda r: r["seed"])
    text = table(records, nets)
    with open(os.path.join(args.out, "effective_filters.md"), "w") as f:
        f.write(text)
    figures(records, nets, args.out)
    print(text)
    print(f"wrote {args.out}/effective_filters.md and effective_filters_*.png", file=sys.stderr)


if __name__ == "__main__":
    main()
