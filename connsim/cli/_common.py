"""What every subcommand shares: the one-line-error parser, typed argument converters, the shared
argument groups, tables, JSON output and progress on stderr."""

from __future__ import annotations

import argparse
import math
import sys

from .._validation import (
    InvalidArgument,
    check_compression,
    check_fraction,
    check_int,
    check_real,
)
from ..architectures import parse_shape
from ..files import dumps
from ..zoo import ZOO, get_arch

EPILOG_TARGET = "Give exactly one of --density, --sparsity or --compression."
PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``connsim CMD: error: ... (see connsim CMD --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------ converters


def number(kind, check, **options):
    """An argparse type: parse with ``kind``, then apply the library's ``check`` (from
    :mod:`connsim._validation`, with ``options``); a refusal restates what the check asks for
    next to the text given (argparse names the option)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = text  # not a number at all: the check refuses it with its own description
        try:
            return check(value, "value", **options)
        except InvalidArgument as e:
            raise argparse.ArgumentTypeError(f"expected {e.what}, got {text!r}"
                                             + (f"; {e.fix}" if e.fix else "")) from None
    return parse


positive_int = number(int, check_int, low=1)
nonneg_int = number(int, check_int)
positive_float = number(float, check_real, low=0, low_open=True)
nonneg_float = number(float, check_real, low=0)
unit_float = number(float, check_fraction)
open_fraction = number(float, check_fraction, open=True)
compression_float = number(float, check_compression)


# --------------------------------------------------------------------------- output


def fmt(x, digits=4) -> str:
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.{digits}g}"
    return str(x)


def table(rows: list[list], header: list[str]) -> str:
    """Left-aligned text, right-aligned numbers, one space-separated column per field."""
    cells = [header] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    numeric = [all(isinstance(r[k], int | float) for r in rows) for k in range(len(header))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w)
                               for c, w, num in zip(r, widths, numeric, strict=True)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(args, obj: dict, text: str) -> None:
    """Print ``obj`` as one JSON object with ``--json``, else ``text``."""
    print(dumps(obj) if args.json else text)


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, else a plain line every few seconds."""

    def __init__(self, label: str, total: int, enabled: bool = True):
        import time

        self._clock = time.monotonic
        self.label, self.total, self.done = label, max(1, total), 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = self._clock()
        self._drawn = False  # a bar is on the terminal line

    def set(self, done: int, total: int | None = None, note: str = "") -> None:
        self.done, self.total = done, max(1, total or self.total, done)
        if not self.enabled:
            return
        if self.tty:
            fill = int(30 * self.done / self.total)
            print(f"\r{self.label} [{'#' * fill}{'.' * (30 - fill)}] {self.done}/{self.total} "
                  f"{note:<24}", end="", file=sys.stderr, flush=True)
            self._drawn = True
        elif self._clock() - self._last >= PROGRESS_EVERY:
            self._last = self._clock()
            print(f"{self.label}: {self.done}/{self.total} {note}".rstrip(), file=sys.stderr,
                  flush=True)

    def step(self, note: str = "") -> None:
        self.set(self.done + 1, note=note)
        if self.done == self.total:
            self.close()

    def close(self) -> None:
        if self.enabled and self._drawn:
            print(file=sys.stderr)
        self.enabled = False


# ------------------------------------------------------------ architecture and inputs


def add_arch_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
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


def arch_of(args):
    """The architecture that ``--arch``, ``--input-shape`` and ``--classes`` name."""
    return get_arch(args.arch, input_shape=args.input_shape, classes=args.classes)


def big_arch(arch, bytes_per_weight: int, what: str):
    """Refuse, before any work, a network whose per-weight arrays cannot fit in memory."""
    from ..memory import check_memory

    check_memory(arch.total_params * bytes_per_weight,
                 f"{what} {arch.name} ({arch.total_params:,} prunable weights)")
    return arch


def check_inputs(args) -> None:
    """Files and backends that training commands need, checked before the data is loaded."""
    import os

    from ..trainer.backend import get_backend

    for name in ("masks", "weights", "match"):
        path = getattr(args, name, None)
        if path and not os.path.isfile(path):
            what = "a directory" if os.path.isdir(path) else "missing"
            raise FileNotFoundError(f"--{name} {path!r} is {what}; a file is expected")
    if getattr(args, "backend", "numpy") != "numpy":
        get_backend(args.backend)


# ------------------------------------------------------------- targets and quota rules


def add_monte_carlo_args(p: argparse.ArgumentParser, samples_help: str, model_help: str) -> None:
    """The Monte Carlo options: --samples, --mask-model and --seed."""
    from ..montecarlo import MC_MASK_MODELS

    p.add_argument("--samples", type=nonneg_int, default=0, help=samples_help)
    p.add_argument("--mask-model", choices=MC_MASK_MODELS, default="bernoulli", help=model_help)
    p.add_argument("--seed", type=nonneg_int, default=0, help="Monte Carlo seed (default: 0)")


def add_target_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--density", type=unit_float, help="global fraction of weights kept, in [0, 1]")
    g.add_argument("--sparsity", type=unit_float,
                   help="global fraction of weights removed, in [0, 1]")
    g.add_argument("--compression", type=compression_float, help="total / kept weights, >= 1")


def target_density(args) -> float | None:
    """The global density that ``--density``, ``--sparsity`` or ``--compression`` asks for."""
    from ..measures import resolve_density

    given = [args.density, args.sparsity, args.compression]
    if all(v is None for v in given):
        return None
    return resolve_density(args.density, args.sparsity, args.compression)


def rules_help() -> str:
    from ..quotas import ALL_RULES

    return "layerwise quota rule: " + ", ".join(ALL_RULES) + " (formulas in docs/quotas.md)"


def add_rule_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", help="for --rule induced: masks file whose densities are copied")
    from ..masks import LAYOUTS

    p.add_argument("--layout", choices=LAYOUTS, default="torch", help="layout of --masks")
    p.add_argument("--densities", help="for --rule custom: comma-separated densities per layer")


def rule_kwargs(args, arch) -> dict:
    """The keyword arguments of :func:`connsim.quota` that ``--masks``/``--densities`` give the
    rules ``induced`` and ``custom``."""
    kw = {}
    if args.rule == "induced":
        if not args.masks:
            raise ValueError("--rule induced needs --masks FILE (the masks whose per-layer "
                             "densities are copied)")
        from ..maskio import load_masks

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

