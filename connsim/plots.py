"""Figures: effective vs direct compression, P(disconnected), active units.

Every helper takes ``ax=None`` (a new figure when omitted), returns the axes and never calls
``plt.show()``. Needs the ``plot`` extra (matplotlib).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'connsim[plot]'") from None
    return plt


def _ax(ax):
    if ax is None:
        _, ax = _plt().subplots(figsize=(5, 4))
    return ax


def _finite(x):
    return np.array([np.nan if v is None or not math.isfinite(v) else v for v in x], dtype=float)


def plot_compression(curves: Mapping[str, dict], *, ax=None, title: str | None = None,
                     kind: str = "theory"):
    """Effective vs direct compression on log-log axes, one colour per rule or method.

    ``curves[name]`` holds ``compression`` and ``effective_compression`` (lines, labelled
    ``kind``: 'theory' or 'measured'), optionally ``effective_compression_connected`` (a dashed
    line: the masks that stay connected, which near collapse are far less sparse than
    N / E[effective] suggests), and optionally ``mc_compression``,
    ``mc_effective_compression``, ``mc_lo``, ``mc_hi`` (Monte Carlo points with error bars).
    Measured points with infinite effective compression (disconnected) are marked with an x on
    the top edge.
    """
    ax = _ax(ax)
    lo, hi = math.inf, 0.0
    cut = []
    for k, (rule, c) in enumerate(curves.items()):
        color = f"C{k}"
        x, y = _finite(c["compression"]), _finite(c["effective_compression"])
        ax.plot(x, y, "-" if kind == "theory" else "o-", color=color, lw=1.8, ms=4,
                label=f"{rule} ({kind})")
        if c.get("effective_compression_connected") is not None:
            ax.plot(x, _finite(c["effective_compression_connected"]), "--", color=color, lw=1.2,
                    label=f"{rule} (theory, connected masks)")
        lo, hi = min(lo, np.nanmin(x)), max(hi, np.nanmax(x))
        if kind != "theory":
            cut.append((color, x[np.isnan(y) & ~np.isnan(x)]))
        if c.get("mc_compression") is not None:
            mx, my = _finite(c["mc_compression"]), _finite(c["mc_effective_compression"])
            # two standard errors; an unbounded upper end (mean - 2 SE <= 0) is drawn as none
            err = np.vstack([my - _finite(c["mc_lo"]), _finite(c["mc_hi"]) - my])
            err = np.nan_to_num(np.clip(err, 0, None), nan=0.0, posinf=0.0)
            ax.errorbar(mx, my, yerr=err, fmt="o", color=color, ms=4, capsize=2,
                        label=f"{rule} (Monte Carlo)")
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="effective = direct")
    ax.set_xscale("log")
    ax.set_yscale("log")
    top = hi * 100  # beyond this the expected effective weights are << 1: disconnected
    ax.set_ylim(max(lo / 2, 0.5), top)
    for k, (color, xs) in enumerate(cut):  # staggered below the top edge, one row per curve
        ax.plot(xs, np.full(xs.shape, top / 1.8 ** (k + 1)), "x", color=color, ms=8, mew=2)
    note = ("a line leaving the top: the network is\nalmost surely disconnected"
            if kind == "theory" else "x: disconnected (effective compression infinite)")
    ax.text(0.02, 0.98, note, transform=ax.transAxes, ha="left", va="top", fontsize=7,
            color="0.3")
    ax.set_xlabel("direct compression (total / kept weights)")
    ax.set_ylabel("effective compression")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    return ax


def plot_disconnection(curves: Mapping[str, dict], *, ax=None):
    """P(disconnected) vs direct compression (log x); Monte Carlo points with 95 % intervals."""
    ax = _ax(ax)
    for k, (rule, c) in enumerate(curves.items()):
        color = f"C{k}"
        ax.plot(_finite(c["compression"]), _finite(c["p_disconnected"]), "-", color=color,
                lw=1.8, label=f"{rule} (theory)")
        if c.get("mc_p_disconnected") is not None:
            p = _finite(c["mc_p_disconnected"])
            ci = np.array(c["mc_p_ci"], dtype=float)
            err = np.clip(np.vstack([p - ci[:, 0], ci[:, 1] - p]), 0, None)
            ax.errorbar(_finite(c["mc_compression"]), p, yerr=err, fmt="o", color=color,
                        ms=4, capsize=2)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("direct compression")
    ax.set_ylabel("P(disconnected)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return ax


def plot_active_units(names: Sequence[str], fractions: Mapping[str, Sequence[float]], *,
                      ax=None, compression: float | None = None):
    """Expected fraction of active output units per layer, one bar group per layer."""
    ax = _ax(ax)
    width = 0.8 / max(1, len(fractions))
    x = np.arange(len(names))
    for k, (rule, f) in enumerate(fractions.items()):
        ax.bar(x + (k - (len(fractions) - 1) / 2) * width, f, width, label=rule, color=f"C{k}")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("expected active fraction of units")
    if compression is not None:
        ax.set_title(f"active units at compression {compression:g}", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def save_prediction_figure(path: str, arch_name: str, curves: Mapping[str, dict],
                           names: Sequence[str], active: Mapping[str, Sequence[float]],
                           active_at: float, approximate: bool) -> None:
    """The three panels side by side, written atomically to ``path``."""
    from .files import atomic_write

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    note = " (approximate theory)" if approximate else ""
    plot_compression(curves, ax=axes[0],
                     title=f"{arch_name}: random pruning, Bernoulli masks{note}")
    plot_disconnection(curves, ax=axes[1])
    plot_active_units(names, active, ax=axes[2], compression=active_at)
    suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ".png"
    with atomic_write(path, suffix) as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)
