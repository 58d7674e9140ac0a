"""Figures: effective vs direct compression, P(disconnected), active units.

Every helper takes ``ax=None`` (a new figure when omitted), returns the axes and never calls
``plt.show()``. Needs the ``plot`` extra (matplotlib).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "plot_active_units", "plot_compression", "plot_disconnection", "save_prediction_figure",
]


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

    Measured points with infinite effective compression (disconnected) are marked with an x on the
    top edge.

    Parameters
    ----------
    curves : mapping of str to dict
        ``curves[name]`` holds ``compression`` and ``effective_compression`` (lines, labelled
        ``kind``), optionally ``effective_compression_connected`` (a dashed line: the masks that
        stay connected, which near collapse are far less sparse than N / E[effective] suggests),
        and optionally ``mc_compression``, ``mc_effective_compression``, ``mc_lo``, ``mc_hi``
        (Monte Carlo points with error bars).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.
    title : str, optional
        The axes' title.
    kind : {'theory', 'measured'}
        Lines for the theory, markers joined by lines for measurements.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    See Also
    --------
    plot_disconnection : P(disconnected) from the same curves.
    connsim.theory.predict : The theory's values.

    Examples
    --------
    >>> from connsim import get_arch, predict, quota
    >>> arch = get_arch("lenet-300-100")
    >>> points = [predict(arch, quota(arch, "igq", 1 / c)) for c in (10, 100, 1000)]
    >>> ax = plot_compression({"igq": {"compression": [p.compression for p in points],
    ...                                "effective_compression": [p.effective_compression
    ...                                                          for p in points]}})
    >>> ax.get_xscale(), ax.get_yscale()
    ('log', 'log')
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
    """P(disconnected) vs direct compression (log x); Monte Carlo points with 95 % intervals.

    Parameters
    ----------
    curves : mapping of str to dict
        ``curves[name]`` holds ``compression`` and ``p_disconnected`` (the theory's line), and
        optionally ``mc_compression``, ``mc_p_disconnected`` and ``mc_p_ci`` (pairs of interval
        ends) for Monte Carlo points.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    See Also
    --------
    plot_compression : Effective compression from the same curves.
    connsim.montecarlo.MonteCarlo.p_disconnected_ci : The Monte Carlo intervals.

    Examples
    --------
    >>> from connsim import get_arch, predict, quota
    >>> arch = get_arch("lenet-300-100")
    >>> grid = [100, 300, 1000, 3000]
    >>> p = [predict(arch, quota(arch, "uniform", 1 / c)).p_disconnected for c in grid]
    >>> ax = plot_disconnection({"uniform": {"compression": grid, "p_disconnected": p}})
    >>> ax.get_ylabel()
    'P(disconnected)'
    """
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
    """Expected fraction of active output units per layer, one bar group per layer.

    Parameters
    ----------
    names : sequence of str
        The layers, in order (the x ticks).
    fractions : mapping of str to sequence of float
        Per rule or method, the active fraction of each layer's output units.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.
    compression : float, optional
        Shown in the title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    See Also
    --------
    connsim.theory.Prediction.expected_active : The theory's expected active units.

    Examples
    --------
    >>> from connsim import get_arch, predict, quota
    >>> arch = get_arch("lenet-300-100")
    >>> p = predict(arch, quota(arch, "uniform", 0.001))
    >>> fractions = p.expected_active / p.group_sizes[list(p.layer_groups)]
    >>> ax = plot_active_units(arch.layer_names, {"uniform": fractions}, compression=1000)
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['fc1', 'fc2', 'fc3']
    """
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
    """The three panels of ``connsim predict --plot`` side by side, written atomically to ``path``.

    Parameters
    ----------
    path : str
        The image file; its suffix chooses the format (``.png``, ``.pdf``, ``.svg``).
    arch_name : str
        Named in the title.
    curves : mapping of str to dict
        As :func:`plot_compression` and :func:`plot_disconnection` take them.
    names : sequence of str
        The layers of the active-units panel.
    active : mapping of str to sequence of float
        As :func:`plot_active_units` takes them.
    active_at : float
        The direct compression of the active-units panel.
    approximate : bool
        Whether the title says that the theory is approximate.

    See Also
    --------
    plot_compression, plot_disconnection, plot_active_units : The panels.

    Examples
    --------
    >>> import os, tempfile
    >>> from connsim import get_arch, predict, quota
    >>> arch = get_arch("lenet-300-100")
    >>> grid = [10, 100, 1000]
    >>> points = [predict(arch, quota(arch, "igq", 1 / c)) for c in grid]
    >>> curves = {"igq": {"compression": grid,
    ...                   "effective_compression": [p.effective_compression for p in points],
    ...                   "p_disconnected": [p.p_disconnected for p in points]}}
    >>> active = {"igq": points[1].expected_active / points[1].group_sizes[[1, 2, 3]]}
    >>> path = os.path.join(tempfile.mkdtemp(), "prediction.png")
    >>> save_prediction_figure(path, arch.name, curves, arch.layer_names, active, 100, False)
    >>> os.path.getsize(path) > 0
    True
    """
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
