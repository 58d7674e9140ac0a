"""``connsim prune``: prune an architecture with :func:`connsim.pruning.prune` and write its
masks."""

from __future__ import annotations

import sys

from ..files import check_writable
from ._common import (
    EPILOG_TARGET,
    Progress,
    add_arch_args,
    add_rule_source_args,
    add_target_args,
    arch_of,
    big_arch,
    check_inputs,
    emit,
    fmt,
    nonneg_int,
    positive_int,
    rule_kwargs,
    rules_help,
    target_density,
)

HELP = "prune an architecture and write its masks"


def add_parser(sub):
    """Add the ``prune`` command to ``sub``."""
    from .._validation import LEVELS
    from ..granularity import GRANULARITIES
    from ..pruning import SCOPES, TARGETS
    from ..quotas import ALL_RULES
    from ..sampling import MASK_MODELS
    from ..scores import METHODS
    from ..trainer.backend import BACKENDS
    from ..trainer.data import DATASETS

    p = sub.add_parser(
        "prune", help=HELP,
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
    add_arch_args(p)
    p.add_argument("--method", default="random", choices=METHODS,
                   help="scores: " + ", ".join(METHODS) + " (default random)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="weight",
                   help="prune single weights, whole kernels or whole output channels")
    p.add_argument("--scope", choices=SCOPES, default=None,
                   help="global ranking (default for score methods), layerwise with --rule "
                        "(default for random), or layer-matched to --match")
    p.add_argument("--rule", default="uniform", choices=ALL_RULES, metavar="RULE",
                   help=rules_help() + "; default uniform")
    add_target_args(p, required=False)
    p.add_argument("--target", choices=TARGETS, default="direct",
                   help="which density the request fixes (default: direct)")
    p.add_argument("--mask-model", choices=MASK_MODELS, default=None,
                   help="random pruning, direct target: exact per-layer counts (default), "
                        "independent Bernoulli weights, or nested priorities")
    p.add_argument("--level", choices=LEVELS, default="channel",
                   help="level of the effective masks (default: channel)")
    p.add_argument("--weights", help="weights to score (.npz from connsim train, or any masks-"
                                     "file format); default: a seeded Kaiming initialisation")
    p.add_argument("--dataset", choices=DATASETS, help="data for snip, iterative-snip, grasp")
    p.add_argument("--data-dir", help="dataset folder or file (see connsim train --help)")
    p.add_argument("--batches", type=positive_int, default=1,
                   help="data batches for data-driven scores")
    p.add_argument("--rounds", type=positive_int, help="rounds of an iterative method (default: "
                                                       "synflow 100, iterative-snip 10)")
    p.add_argument("--match", help="for --scope layer-matched: masks whose per-layer densities "
                                   "are copied")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default: 0)")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="array backend of the gradient passes of snip, iterative-snip, grasp "
                        "and synflow: numpy (default) or cupy")
    add_rule_source_args(p)
    p.add_argument("--out", required=True, help="output masks file (.npz or .safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def check_out_masks(path: str) -> None:
    """An output masks file, checked before any work (including the package it needs)."""
    check_writable(path, (".npz", ".safetensors"))
    if path.endswith(".safetensors"):
        try:
            import safetensors  # noqa: F401
        except ImportError:
            raise ImportError("writing .safetensors needs the 'safetensors' package: pip install "
                              "'connsim[io]' (or write .npz)") from None


def run(args) -> int:
    """Prune and write the masks; returns the exit status."""
    from ..maskio import load_masks, load_weights, save_masks
    from ..pruning import prune
    from ..quotas import IMPLIED_RULES
    from ..trainer.data import load_dataset

    check_out_masks(args.out)
    check_inputs(args)
    arch = big_arch(arch_of(args), 48, "pruning")
    density = target_density(args)
    if density is None and (args.target == "effective" or args.rule not in IMPLIED_RULES):
        raise ValueError("give one of --density, --sparsity or --compression (only "
                         "--rule induced/custom with --target direct imply it)")
    weights, state = load_weights(args.weights, arch) if args.weights else (None, None)
    data = None
    if args.dataset:
        data = load_dataset(args.dataset, args.data_dir, seed=args.seed,
                            input_shape=arch.input_shape, classes=arch.output.channels
                            ).reshaped(arch.input_shape)
    ref = load_masks(args.match, arch, layout=args.layout) if args.match else None
    bar = Progress(f"{args.method} rounds", args.rounds or 1, not args.json)
    res = prune(arch, args.method, density, granularity=args.granularity, scope=args.scope,
                rule=args.rule, rule_kw=rule_kwargs(args, arch), mask_model=args.mask_model,
                reference_masks=ref, target=args.target, level=args.level, weights=weights,
                state=state, data=data, n_batches=args.batches, rounds=args.rounds,
                rng=args.seed, backend=args.backend,
                progress=lambda t, total: bar.set(t, total))
    bar.close()
    save_masks(args.out, res.masks)
    if not res.target_met:
        print(f"connsim prune: warning: {res.message}", file=sys.stderr)
    m = res.measurement
    groups = {"granularity": args.granularity, "kept": res.kept_groups,
              "total": res.total_groups, "fraction": res.group_fraction}
    obj = m.to_dict()
    obj.update({"method": args.method, "scope": res.scope, "rule": args.rule,
                "target": args.target, "requested_density": res.density,
                "target_met": res.target_met, "message": res.message, "seed": args.seed,
                "out": args.out, "groups": groups})
    if res.probes is not None:
        obj["probes"] = res.probes
    eff_c = "inf (disconnected)" if m.disconnected else fmt(m.effective_compression)
    text = (f"{arch.name}: {args.method} pruning ({res.scope}"
            + (f", rule {args.rule}" if res.scope == "layerwise" else "")
            + f", {args.granularity} granularity), {args.target} target {fmt(res.density)}\n"
            f"  direct:    density {fmt(m.density)}, compression {fmt(m.compression)}\n"
            f"  effective: density {fmt(m.effective_density)}, compression {eff_c}\n"
            f"  groups:    {groups['kept']:,} of {groups['total']:,} kept\n"
            + (f"  probes:    {res.probes}\n" if res.probes is not None else "")
            + ("" if res.target_met else "  target NOT met (see the warning above)\n")
            + f"  wrote {args.out}")
    emit(args, obj, text)
    return 0
