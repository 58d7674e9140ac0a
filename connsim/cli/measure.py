"""``connsim measure``: direct vs effective density and compression of a masks file."""

from __future__ import annotations

from ._common import add_arch_args, arch_of, big_arch, emit, fmt, table

HELP = "direct vs effective density/compression of a masks file"


def add_parser(sub):
    """Add the ``measure`` command to ``sub``."""
    from .._validation import LEVELS
    from ..masks import LAYOUTS

    p = sub.add_parser(
        "measure", help=HELP,
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
    add_arch_args(p)
    p.add_argument("--level", choices=LEVELS, default="channel",
                   help="channel: topology of the channel graph (default); position: exact, "
                        "resolves which kernel entries read only zero padding")
    p.add_argument("--layout", choices=LAYOUTS, default="torch",
                   help="array layout in the file: torch (out,in[,kh,kw]) or keras "
                        "([kh,kw,]in,out)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Measure a masks file; returns the exit status."""
    from ..maskio import load_masks
    from ..measures import measure

    arch = big_arch(arch_of(args), 24, "measuring")
    masks = load_masks(args.masks, arch, layout=args.layout)
    m = measure(arch, masks, level=args.level)
    rows = [[lm.name, lm.params, lm.kept, lm.effective, lm.density, lm.effective_density,
             f"{lm.active_in}/{lm.units_in}", f"{lm.active_out}/{lm.units_out}"]
            for lm in m.layers]
    text = table(rows, ["layer", "params", "kept", "effective", "density", "eff.density",
                        "active in", "active out"])
    eff_c = "inf (disconnected)" if m.disconnected else fmt(m.effective_compression)
    text += (
        f"\n\n{m.arch} ({m.level} level): {m.params:,} prunable weights"
        f"\n  direct:    {m.kept:,} kept, density {fmt(m.density)}, "
        f"compression {fmt(m.compression)}"
        f"\n  effective: {m.effective:,} kept, density {fmt(m.effective_density)}, "
        f"compression {eff_c}"
        f"\n  removable hidden units: {m.removable_units:,} of {m.hidden_units:,}"
    )
    emit(args, m.to_dict(), text)
    return 0
