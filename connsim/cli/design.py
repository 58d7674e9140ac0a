"""``connsim design``: per-layer densities optimised with the exact theory."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_compression
from ._common import Progress, add_arch_args, add_monte_carlo_args, arch_of, emit, number, table

HELP = "optimise per-layer densities with the exact theory"


def add_parser(sub):
    """Add the ``design`` command to ``sub``."""
    from ..design import OBJECTIVES

    p = sub.add_parser(
        "design", help=HELP,
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
    add_arch_args(p)
    p.add_argument("--compression", required=True,
                   type=number(float, check_compression, strict=True),
                   help="direct compression (> 1)")
    p.add_argument("--objective", choices=OBJECTIVES, default="effective",
                   help="what to optimise (default: effective)")
    add_monte_carlo_args(p, "Monte Carlo samples per quota for the comparison (default 0)",
                         "Monte Carlo mask model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Design a quota and compare it with uniform, ERK and IGQ; returns the exit status."""
    from ..design import design_quota
    from ..montecarlo import monte_carlo
    from ..quotas import quota
    from ..theory import predict

    arch = arch_of(args)
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
    emit(args, obj, text)
    return 0
