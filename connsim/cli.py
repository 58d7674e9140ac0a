"""The ``connsim`` command line. Every subcommand prints a readable table, or one JSON object with
``--json``. Errors print one line on stderr and exit with status 2."""

from __future__ import annotations

import argparse
import json
import math
import sys

from .architectures import parse_shape
from .zoo import ZOO, get_arch

EPILOG_TARGET = "Give exactly one of --density, --sparsity or --compression."


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
    p.add_argument("--classes", type=int, default=None,
                   help="number of output classes (default: the reference setup)")


def _arch(args):
    return get_arch(args.arch, input_shape=args.input_shape, classes=args.classes)


def _emit(args, obj: dict, text: str) -> None:
    print(json.dumps(obj) if args.json else text)


# ----------------------------------------------------------------------------- arch


def cmd_arch(args) -> int:
    if args.arch is None:
        if args.json:
            print(json.dumps({"architectures": list(ZOO)}))
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

    arch = _arch(args)
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


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connsim",
        description=(
            "How sparse is a pruned network really? connsim counts the effective weights (those on "
            "some input-to-output path) next to the direct (nonzero) ones, at channel level or "
            "exactly at position level."
        ),
        epilog="Run 'connsim COMMAND --help' for each command. Docs: docs/ in the repository.",
    )
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
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"connsim {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
