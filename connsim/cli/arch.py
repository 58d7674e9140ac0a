"""``connsim arch``: the zoo, or one architecture's prunable layers."""

from __future__ import annotations

from ..files import dumps
from ..zoo import ZOO
from ._common import add_arch_args, arch_of, emit, table

HELP = "list the architecture zoo, or one architecture's prunable layers"


def add_parser(sub):
    """Add the ``arch`` command to ``sub``."""
    p = sub.add_parser(
        "arch", help=HELP,
        description="List the zoo, or the prunable layers of one architecture (weight shapes in "
                    "PyTorch layout) and its total prunable weights.",
        epilog="Example: connsim arch vgg-19 --classes 100 --json",
    )
    add_arch_args(p, positional=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """List the zoo, or one architecture's prunable layers; returns the exit status."""
    if args.arch is None:
        if args.json:
            print(dumps({"architectures": list(ZOO)}))
        else:
            print("Architectures (connsim arch NAME for the layers):\n  " + "\n  ".join(ZOO))
        return 0
    arch = arch_of(args)
    rows = arch.summary()
    obj = {"arch": arch.name, "input_shape": list(arch.input_shape),
           "classes": arch.output.channels, "chain": arch.is_chain,
           "layers": rows, "total": arch.total_params}
    text = table([[r["name"], r["kind"], "x".join(map(str, r["shape"])), r["params"]]
                  for r in rows], ["layer", "kind", "shape (out,in,kh,kw)", "params"])
    text += (f"\n\n{arch.name}: {len(rows)} prunable layers, {arch.total_params:,} prunable "
             f"weights, input {arch.input_shape}, {'chain' if arch.is_chain else 'DAG (skips)'}")
    emit(args, obj, text)
    return 0
