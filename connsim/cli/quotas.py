"""``connsim quotas``: per-layer densities and kept counts of a quota rule."""

from __future__ import annotations

import math

from ._common import (
    EPILOG_TARGET,
    add_arch_args,
    add_rule_source_args,
    add_target_args,
    arch_of,
    emit,
    fmt,
    rule_kwargs,
    rules_help,
    table,
    target_density,
)

HELP = "per-layer densities of a quota rule at a global density"


def add_parser(sub):
    """Add the ``quotas`` command to ``sub``."""
    from ..quotas import ALL_RULES

    p = sub.add_parser(
        "quotas", help=HELP,
        description=(
            "Per-layer densities and exact kept counts of a layerwise quota rule. Counts sum to "
            "round(D*N) exactly. An infeasible request (uniform+ beyond its limit, "
            "erk-redistribute at high density) exits with status 2 and says the feasible range."
        ),
        epilog=("Examples: connsim quotas --arch lenet-300-100 --rule igq --compression 100; "
                "connsim quotas --arch vgg-16 --rule erk --sparsity 0.99 --json. "
                + EPILOG_TARGET + " induced/custom imply the density."),
    )
    add_arch_args(p)
    p.add_argument("--rule", required=True, choices=ALL_RULES, metavar="RULE", help=rules_help())
    add_target_args(p, required=False)
    add_rule_source_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Print a quota rule's per-layer densities and kept counts; returns the exit status."""
    from ..quotas import quota

    arch = arch_of(args)
    q = quota(arch, args.rule, target_density(args), **rule_kwargs(args, arch))
    rows = [[lay["name"], lay["params"], lay["density"], lay["kept"]]
            for lay in q.to_dict()["layers"]]
    text = table(rows, ["layer", "params", "density", "kept"])
    text += (f"\n\n{arch.name}, rule {q.rule}: global density {fmt(q.density)} "
             f"(compression {fmt(1 / q.density if q.density else math.inf)}), "
             f"{int(q.kept.sum()):,} of {int(q.params.sum()):,} weights kept")
    if q.force is not None:
        text += f"; piston force F = {q.force:.6g}"
    emit(args, q.to_dict(), text)
    return 0
