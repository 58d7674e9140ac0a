"""``connsim predict``: the theory of random pruning under quota rules, with an optional Monte
Carlo check and figure."""

from __future__ import annotations

import argparse
import math

import numpy as np

from ..files import check_writable, dumps
from ._common import (
    EPILOG_TARGET,
    Progress,
    add_arch_args,
    add_monte_carlo_args,
    arch_of,
    compression_float,
    table,
    unit_float,
)


def _rule_list(text):
    from ..quotas import RULES

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


HELP = "theory of random pruning: effective compression, P(disconnected)"


def add_parser(sub):
    """Add the ``predict`` command to ``sub``."""
    p = sub.add_parser(
        "predict", help=HELP,
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
    add_arch_args(p)
    p.add_argument("--rule", default="uniform", type=_rule_list,
                   help="quota rule, or several separated by commas (default: uniform)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--density", type=unit_float, nargs="+", help="global densities")
    g.add_argument("--sparsity", type=unit_float, nargs="+", help="global sparsities")
    g.add_argument("--compression", type=compression_float, nargs="+",
                   help="direct compressions")
    add_monte_carlo_args(p, "Monte Carlo samples per point (default 0: theory only)",
                         "Monte Carlo mask model (the theory is always Bernoulli)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write a figure: effective vs direct compression, P(disconnected), "
                        "active units (needs the plot extra)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _targets(args) -> list[float]:
    from ..measures import resolve_density

    if args.density is not None:
        return [resolve_density(density=x) for x in args.density]
    if args.sparsity is not None:
        return [resolve_density(sparsity=x) for x in args.sparsity]
    return [resolve_density(compression=x) for x in args.compression]


def _predict_rule(arch, rule, densities, args, progress) -> list[tuple]:
    """Theory (and Monte Carlo) for one rule: ``(JSON row, Prediction, MonteCarlo)`` at each
    density; an infeasible point has a row that says why and neither of the others."""
    from ..montecarlo import monte_carlo
    from ..quotas import InfeasibleQuota, quota
    from ..theory import predict

    points = []
    for k, d in enumerate(densities):
        try:
            q = quota(arch, rule, d)
        except InfeasibleQuota as e:
            points.append(({"compression": 1 / d if d else None, "direct_density": d,
                            "infeasible": str(e)}, None, None))
            progress.step(f"{rule} skipped")
            continue
        p = predict(arch, q)
        mc = None
        if args.samples:
            mc = monte_carlo(arch, q, samples=args.samples, mask_model=args.mask_model,
                             rng=np.random.SeedSequence([args.seed, k]))
        row = p.to_dict()
        row["mc"] = mc.to_dict() if mc else None
        points.append((row, p, mc))
        progress.step(f"{rule} c={1 / d:.3g}" if d else rule)
    return points


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


def _table_row(r: dict, samples: int, width: int) -> list:
    if "infeasible" in r:
        return [r["compression"] or math.inf, "infeasible"] + ["-"] * (width - 2)
    e = r["expected_effective_params"]
    row = [r["compression"], r["p_disconnected"], e, _effc(r["effective_compression"], e),
           _dash(r["expected_effective_params_connected"]),
           _effc(r["effective_compression_connected"])]
    if samples:
        mc = r["mc"]
        row += [mc["mean_effective_params"], _dash(mc["stderr"]),
                _dash(mc["mean_effective_params_connected"]), mc["p_disconnected"]]
    return row


def run(args) -> int:
    """Print (and plot) the theory, and Monte Carlo if asked, per rule; returns the exit status."""
    if args.plot:
        check_writable(args.plot, (".png", ".pdf", ".svg"), what="--plot")
        from ..plots import _plt

        _plt()  # fail now, not after the computation, if matplotlib is missing
    arch = arch_of(args)
    rules = args.rule
    densities = _targets(args)
    progress = Progress("predict", len(rules) * len(densities), enabled=not args.json)
    by_rule = {rule: _predict_rule(arch, rule, densities, args, progress) for rule in rules}
    approximate = any(p is not None and not p.exact
                      for points in by_rule.values() for _, p, _ in points)
    objs = [{"arch": arch.name, "rule": rule, "approximate": approximate,
             "results": [row for row, _, _ in points]} for rule, points in by_rule.items()]
    if args.plot:
        _prediction_plot(arch, rules, densities, by_rule, args, approximate)
    if args.json:
        print(dumps(objs[0] if len(objs) == 1 else {"arch": arch.name, "rules": objs}))
        return 0
    head = ["compression", "P(disconnected)", "E[effective]", "eff.compression",
            "E[eff|connected]", "eff.compr.|connected"]
    if args.samples:
        head += ["MC effective", "MC stderr", "MC eff|connected", "MC P(disc)"]
    label = "approximate theory (DAG, docs/theory.md)" if approximate else "exact theory"
    for obj in objs:
        print(f"{arch.name}, rule {obj['rule']} - {label} for Bernoulli masks"
              + (f"; Monte Carlo: {args.samples} {args.mask_model} samples" if args.samples
                 else ""))
        print(table([_table_row(r, args.samples, len(head)) for r in obj["results"]], head)
              + "\n")
    print("E[eff|connected]: expected effective weights of the masks that stay connected "
          "(a disconnected mask has none); 'disconnected': less than one effective weight "
          "expected.")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _prediction_plot(arch, rules, densities, by_rule, args, approximate):
    from ..plots import save_prediction_figure
    from ..quotas import InfeasibleQuota, quota
    from ..theory import predict

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
        sampled = [(row["compression"], mc) for row, _, mc in by_rule[rule] if mc is not None]
        if sampled:
            bands = [mc.effective_compression_band(z=2.0) for _, mc in sampled]
            curve["mc_compression"] = [c for c, _ in sampled]
            curve["mc_effective_compression"], curve["mc_lo"], curve["mc_hi"] = (
                list(x) for x in zip(*bands, strict=True))
            curve["mc_p_disconnected"] = [mc.p_disconnected for _, mc in sampled]
            curve["mc_p_ci"] = [mc.p_disconnected_ci for _, mc in sampled]
        curves[rule] = curve
        try:
            p = predict(arch, quota(arch, rule, 1 / at))
            active[rule] = list(p.expected_active / p.group_sizes[list(p.layer_groups)])
        except InfeasibleQuota:
            pass
    save_prediction_figure(args.plot, arch.name, curves, list(arch.layer_names), active, at,
                           approximate)
