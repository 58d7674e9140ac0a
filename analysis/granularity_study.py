"""Granularity study (Heyman & Zylberberg 2024): does intelligent pruning lose its edge over random
pruning as the granularity coarsens?

    python analysis/granularity_study.py [--net mlp|resnet-20] [--quick] [--seeds 3]
        [--runs runs/granularity] [--out docs/figures] [--data-dir CIFAR_FOLDER]

Protocol (``docs/granularity.md``): for each granularity, bisect the preservation rate (kept share
of the prunable groups) at which random pruning, one-shot at initialisation with the same share
kept in every layer, reaches the reference accuracy (seed 0); then, at that rate and for every
seed, train the random baseline and IMP with each criterion (``levels`` rounds keeping
``rate^(k/levels)`` of each layer's groups, rewinding to the initialisation). Every run reports
test accuracy, direct and effective parameters; the random baselines also their analytic
expectation (:func:`connsim.theory.predict`, unit deletion at channel and node granularity).

Presets: ``mlp`` is the paper's MLP (784-2500-2000-1500-1000-500-10, scaled tanh, U(-0.05, 0.05),
Adam 2e-5, batch 128, node masks on pre-activations) on MNIST at CPU scale; ``resnet-20`` is the
paper's CIFAR-10 setup (classifier and projection shortcuts excluded: 267,696 weights, 29,744
kernels, 688 channels; SGD m 0.9, wd 1e-4, lr 0 -> 0.03 over 20k iterations, 0.003 to 25k,
0.0003 to 30k; crop + flip; Xavier-normal init; channel masks after BN and ReLU, after the add for
a block's second conv), ready for a GPU or a cluster; without ``--data-dir`` its ``--quick`` run
uses a synthetic 3x32x32 stand-in. Runs are cached as JSON under --runs (one per run, keyed by
every setting): re-running resumes. Writes ``granularity[_NET][_quick].md``, ``.json`` and
``.png`` to --out.
"""

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, replace

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from connsim import get_arch  # noqa: E402
from connsim.files import write_json  # noqa: E402
from connsim.granularity import (  # noqa: E402
    check_semantics,
    expand,
    group_shape,
    prunable_layers,
    unit_masks,
)
from connsim.imp import GroupPruning  # noqa: E402
from connsim.maskio import read_npz  # noqa: E402
from connsim.theory import predict  # noqa: E402
from connsim.trainer.data import Dataset, load_cifar, load_mnist, make_synthetic  # noqa: E402
from connsim.trainer.loop import TrainConfig, Trainer  # noqa: E402

PRESETS = {
    "mlp": {
        "arch": "dbsn-mlp", "exclude": (), "semantics": None,
        "granularities": ("weight", "node"),
        "criteria": {"weight": ("magnitude", "snip", "bad-magnitude"),
                     "node": ("magnitude", "snip", "stat", "bad-magnitude")},
        "bounds": {"weight": (0.002, 1.0), "node": (0.01, 1.0)},
        "train": TrainConfig(iterations=400, batch_size=128, lr=2e-5, optimizer="adam",
                             schedule="constant", weight_decay=0.0, init="uniform"),
        "n_train": 20_000, "reference_drop": 0.02,
    },
    "resnet-20": {
        "arch": "resnet-20", "exclude": ("fc", "*.shortcut"), "semantics": "output",
        "granularities": ("weight", "kernel", "channel"),
        "criteria": {"weight": ("magnitude", "snip", "bad-magnitude"),
                     "kernel": ("magnitude", "snip", "bad-magnitude"),
                     "channel": ("magnitude", "snip", "stat", "bad-magnitude")},
        "bounds": {"weight": (0.005, 1.0), "kernel": (0.01, 1.0), "channel": (0.05, 1.0)},
        "train": TrainConfig(iterations=30_000, batch_size=128, lr=0.03, optimizer="sgd",
                             momentum=0.9, weight_decay=1e-4, schedule="step", warmup=20_000,
                             milestones=(20_000, 25_000), gamma=0.1, augment=True,
                             init="fan-avg"),
        "n_train": None, "reference": 0.85,
    },
}
QUICK = {"iterations": 12, "seeds": 1, "bisect": 1, "levels": 1, "n_train": 2_000, "samples": 200}


def settings_for(args) -> dict:
    """Everything that defines the runs of this invocation."""
    p = PRESETS[args.net]
    train = p["train"]
    if args.quick:
        train = replace(train, iterations=QUICK["iterations"], warmup=0, milestones=())
    s = {"net": args.net, "arch": p["arch"], "exclude": list(p["exclude"]),
         "semantics": p["semantics"], "train": asdict(train),
         "n_train": QUICK["n_train"] if args.quick else p["n_train"],
         "levels": QUICK["levels"] if args.quick else args.levels,
         "samples": QUICK["samples"] if args.quick else args.samples,
         "bisect": QUICK["bisect"] if args.quick else args.bisect,
         "seeds": QUICK["seeds"] if args.quick else args.seeds,
         "granularities": list(p["granularities"]),
         "criteria": {g: list(c) for g, c in p["criteria"].items()},
         "bounds": {g: list(b) for g, b in p["bounds"].items()},
         "data": "synthetic" if args.net == "resnet-20" and not args.data_dir else
         ("cifar10" if args.net == "resnet-20" else "mnist")}
    return s


def load_data(s, data_dir):
    if s["data"] == "synthetic":
        return make_synthetic((3, 32, 32), classes=10, n_train=s["n_train"], n_test=500, seed=0)
    data = load_cifar(data_dir, 10) if s["data"] == "cifar10" else load_mnist()
    n = s["n_train"]
    if n is None or n >= len(data.y_train):
        return data
    pick = np.sort(np.random.default_rng(0).permutation(len(data.y_train))[:n])
    return Dataset(data.name, data.x_train[pick], data.y_train[pick], data.x_test, data.y_test,
                   data.classes)


class Study:
    """The runs of one preset; each is cached as JSON under ``runs`` keyed by its settings."""

    def __init__(self, s: dict, data, runs: str):
        self.s, self.data, self.runs = s, data, runs
        self.arch = get_arch(s["arch"], input_shape=data.input_shape)
        self.exclude = tuple(s["exclude"])
        self.config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in s["train"].items()})
        os.makedirs(runs, exist_ok=True)
        self._dense: dict = {}  # seed -> (state, record), read from disk once
        key = json.dumps({k: s[k] for k in ("arch", "exclude", "semantics", "train", "n_train",
                                            "data", "samples")}, sort_keys=True)
        self.tag = hashlib.sha256(key.encode()).hexdigest()[:12]

    def semantics(self, gran):
        return check_semantics(gran, self.s["semantics"]) if gran in ("channel", "node") else None

    def _path(self, *parts) -> str:
        return os.path.join(self.runs, "_".join([self.tag, *map(str, parts)]))

    def _train(self, masks, seed, gran):
        units = unit_masks(self.arch, masks, gran, self.semantics(gran), self.exclude)
        tr = Trainer(self.arch, self.data, masks, replace(self.config, seed=seed), log_test=False,
                     units=units)
        tr.run()
        res = tr.result()
        m = res.measurement
        return tr.network, {"test_accuracy": res.test_accuracy, "direct": m.kept,
                            "effective": m.effective, "seconds": res.seconds}

    def dense(self, seed):
        """The dense run of ``seed`` (its trained state feeds the first pruning round)."""
        if seed in self._dense:
            return self._dense[seed]
        path = self._path("dense", seed)
        if os.path.exists(path + ".json"):
            with open(path + ".json") as f:
                self._dense[seed] = read_npz(path + ".npz"), json.load(f)
            return self._dense[seed]
        net, rec = self._train(None, seed, "weight")
        state = net.state_dict()
        with open(path + ".npz.tmp", "wb") as f:
            np.savez(f, **state)
        os.replace(path + ".npz.tmp", path + ".npz")
        write_json(path + ".json", rec)
        self._dense[seed] = state, rec
        return state, rec

    def _counts(self, gran, rate):
        return {n: round(rate * int(np.prod(group_shape(self.arch, n, gran))))
                for n in prunable_layers(self.arch, gran, self.exclude)}

    def random(self, gran, rate, seed):
        """One-shot random pruning at initialisation keeping ``rate`` of every layer's groups."""
        path = self._path("random", gran, f"{rate:.6g}", seed) + ".json"
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        rng = np.random.default_rng([seed, 7])
        counts = self._counts(gran, rate)
        group = {}
        for n in self.arch.layer_names:
            shape = group_shape(self.arch, n, gran)
            keep = np.ones(int(np.prod(shape)), dtype=bool)
            if n in counts:
                keep[:] = False
                keep[rng.permutation(keep.size)[:counts[n]]] = True
            group[n] = keep.reshape(shape)
        masks = expand(self.arch, group, gran)
        _, rec = self._train(masks, seed, gran)
        f = [counts[n] / np.prod(group_shape(self.arch, n, gran)) if n in counts else 1.0
             for n in self.arch.layer_names]
        p = predict(self.arch, f, granularity=gran, semantics=self.semantics(gran),
                    exclude=self.exclude)
        rec.update(rate=rate, predicted_effective=p.expected_effective_params)
        write_json(path, rec)
        return rec

    def imp(self, gran, criterion, rate, seed):
        """IMP with ``criterion`` to ``rate`` in ``levels`` rounds, rewinding to initialisation."""
        levels = self.s["levels"]
        path = self._path("imp", gran, criterion, f"{rate:.6g}", levels, seed) + ".json"
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        groups = GroupPruning(rate, gran, criterion, semantics=self.semantics(gran),
                              exclude=self.exclude, samples=self.s["samples"])
        state, _ = self.dense(seed)
        masks = {n: np.ones(self.arch.weight_shape(n), dtype=bool) for n in self.arch.layer_names}
        for level in range(1, levels + 1):
            masks = groups.prune(self.arch, state, masks, level, levels, "layerwise", self.data,
                                 seed)
            net, rec = self._train(masks, seed, gran)
            state = net.state_dict()
        rec.update(rate=rate)
        write_json(path, rec)
        return rec

    def bisect(self, gran, reference):
        """The smallest preservation rate found at which random pruning (seed 0) reaches
        ``reference``: geometric bisection between the preset's bounds."""
        lo, hi = self.s["bounds"][gran]
        trace = []
        for _ in range(self.s["bisect"]):
            mid = math.sqrt(lo * hi)
            acc = self.random(gran, mid, 0)["test_accuracy"]
            trace.append((mid, acc))
            lo, hi = (lo, mid) if acc >= reference else (mid, hi)
            print(f"  bisect {gran}: rate {mid:.4g} -> {acc:.4f} (reference {reference:.4f})",
                  flush=True)
        return hi, trace


def _stats(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run(study: Study, reference: float | None, drop: float | None):
    s = study.s
    seeds = list(range(s["seeds"]))
    dense = [study.dense(seed)[1] for seed in seeds]
    dense_acc = _stats([d["test_accuracy"] for d in dense])
    if reference is None:
        reference = dense_acc[0] - drop
    print(f"dense accuracy {dense_acc[0]:.4f} +- {dense_acc[1]:.4f}; reference {reference:.4f}",
          flush=True)
    out = {"settings": s, "dense": dense, "reference": reference, "granularities": {}}
    for gran in s["granularities"]:
        rate, trace = study.bisect(gran, reference)
        arms = {"random": [study.random(gran, rate, seed) for seed in seeds]}
        for crit in s["criteria"][gran]:
            arms[crit] = [study.imp(gran, crit, rate, seed) for seed in seeds]
            print(f"  {gran} {crit}: " + ", ".join(f"{r['test_accuracy']:.4f}"
                                                  for r in arms[crit]), flush=True)
        out["granularities"][gran] = {"rate": rate, "bisection": trace, "arms": arms}
    return out


def table(out) -> str:
    lines = [f"Reference accuracy {out['reference']:.4f} (dense "
             f"{_stats([d['test_accuracy'] for d in out['dense']])[0]:.4f}).", "",
             "| granularity | random rate | arm | test accuracy | direct params | effective "
             "params | predicted effective |", "|---|---|---|---|---|---|---|"]
    for gran, g in out["granularities"].items():
        for arm, recs in g["arms"].items():
            acc = _stats([r["test_accuracy"] for r in recs])
            direct = _stats([r["direct"] for r in recs])[0]
            eff = _stats([r["effective"] for r in recs])[0]
            pred = (f"{_stats([r['predicted_effective'] for r in recs])[0]:,.0f}"
                    if arm == "random" else "")
            lines.append(f"| {gran} | {g['rate']:.4g} | {arm} | {acc[0]:.4f} ± {acc[1]:.4f} | "
                         f"{direct:,.0f} | {eff:,.0f} | {pred} |")
    return "\n".join(lines) + "\n"


def figure(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grans = list(out["granularities"])
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(grans), 3.4))
    arms = sorted({a for g in out["granularities"].values() for a in g["arms"]},
                  key=lambda a: (a != "random", a))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        xs, ms, ss = [], [], []
        for i, gran in enumerate(grans):
            recs = out["granularities"][gran]["arms"].get(arm)
            if recs:
                m, sd = _stats([r["test_accuracy"] for r in recs])
                xs.append(i + (k - (len(arms) - 1) / 2) * width)
                ms.append(m)
                ss.append(sd)
        ax.bar(xs, ms, width, yerr=ss, label=arm, capsize=2)
    ax.axhline(out["reference"], color="k", lw=0.8, ls="--", label="reference")
    ax.set_xticks(range(len(grans)),
                  [f"{g}\nrate {out['granularities'][g]['rate']:.3g}" for g in grans])
    lo = min(r["test_accuracy"] for g in out["granularities"].values()
             for recs in g["arms"].values() for r in recs)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", choices=sorted(PRESETS), default="mlp")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--levels", type=int, default=1, help="IMP rounds (default 1)")
    ap.add_argument("--bisect", type=int, default=4, help="bisection steps (default 4)")
    ap.add_argument("--samples", type=int, default=2000, help="examples snip and stat read")
    ap.add_argument("--reference", type=float, default=None,
                    help="reference accuracy (default: the preset's, or dense minus its drop)")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 python folder (resnet-20)")
    ap.add_argument("--runs", default=os.path.join("runs", "granularity"))
    ap.add_argument("--out", default=os.path.join("docs", "figures"))
    args = ap.parse_args()
    if args.net == "resnet-20" and not args.quick and not args.data_dir:
        ap.error("the full resnet-20 preset trains on CIFAR-10: give --data-dir (the folder of "
                 "the python batches), or --quick for a synthetic smoke run")
    s = settings_for(args)
    preset = PRESETS[args.net]
    data = load_data(s, args.data_dir)
    runs = args.runs if not args.quick else os.path.join(args.out, "granularity_runs_quick")
    study = Study(s, data, runs)
    reference = args.reference if args.reference is not None else preset.get("reference")
    if args.quick:  # any accuracy passes: the smoke run prunes at the first bisection point
        reference = 0.0
    out = run(study, reference, preset.get("reference_drop"))
    os.makedirs(args.out, exist_ok=True)
    stem = "granularity" + ("" if args.net == "mlp" else "_" + args.net.replace("-", "")) + \
        ("_quick" if args.quick else "")
    write_json(os.path.join(args.out, stem + ".json"), out)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(table(out))
    figure(out, os.path.join(args.out, stem + ".png"))
    print(table(out))
    print(f"wrote {args.out}/{stem}.md, .json, .png")


if __name__ == "__main__":
    main()
