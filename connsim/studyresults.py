"""Reading a study's results: its rows with derived columns, progress, export and figure data."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np

from .files import atomic_write, check_writable
from .study import Figure, Study, compile_expression
from .studydb import ResultsDB

__all__ = [
    "Curve", "Progress", "curves", "export", "plot_figure", "progress", "results",
]


EXPORT_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class Progress:
    """How far a study is: counts of its tasks by state, and time spent.

    Attributes
    ----------
    total : int
        Tasks of the study.
    done, failed, pending : int
        Tasks with a ``done`` row, with a ``failed`` row, and without a row.
    other_rows : int
        Rows of the database that are not tasks of this study (older settings, other variants).
    task_seconds : float
        Time spent in the done tasks, summed.

    See Also
    --------
    progress : Computes it.

    Examples
    --------
    >>> Progress(total=6, done=4, failed=1, pending=1, other_rows=0, task_seconds=2.5).to_dict()["done"]
    4
    """

    total: int
    done: int
    failed: int
    pending: int
    other_rows: int  # rows of the database that are not tasks of this study (older settings)
    task_seconds: float  # summed over the done tasks

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def results(study: Study, db: ResultsDB) -> list[dict]:
    r"""The study's rows (tasks without a row are left out), in grid order, with derived columns.

    Parameters
    ----------
    study : Study
        The study, from :func:`connsim.study.load_study`.
    db : ResultsDB
        Its results database.

    Returns
    -------
    list of dict
        One dict per row: ``hash``, ``status``, the configuration, the results and the derived
        columns.

    See Also
    --------
    export : The same rows into a CSV or Parquet file.
    curves : The rows of a figure, grouped into curves.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from connsim import __version__
    >>> from connsim.study import load_study
    >>> from connsim.studydb import ResultsDB
    >>> from connsim.studytasks import execute
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\nrule = ["uniform", "igq"]\n'
    ...                     'compression = [10, 100, 1000]\n[settings]\narch = "lenet-5"\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\ncurves = ["rule"]\n')
    >>> study = load_study(path)
    >>> db = ResultsDB(study.database)
    >>> for t in study.tasks():  # what connsim.studyrun.run_study does, without Dask
    ...     db.record(t.hash, t.kind, t.config, execute(t.kind, t.config, __version__), __version__)
    >>> rows = results(study, db)
    >>> [(r["rule"], r["compression"], round(r["theory_effective_compression"])) for r in rows][:2]
    [('uniform', 10.0, 11), ('uniform', 100.0, 1289)]
    """
    tasks = study.tasks()
    rows = db.rows([t.hash for t in tasks])
    derived = {name: compile_expression(expr) for name, expr in study.derived.items()}
    for row in rows:
        row.update({name: f(row) for name, f in derived.items()})
    return rows


def progress(study: Study, db: ResultsDB) -> Progress:
    r"""Counts of the study's tasks by state.

    Parameters
    ----------
    study : Study
        The study.
    db : ResultsDB
        Its results database.

    Returns
    -------
    Progress
        Done, failed and pending tasks, rows of other tasks, and the time spent.

    See Also
    --------
    results : The rows themselves.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from connsim import __version__
    >>> from connsim.study import load_study
    >>> from connsim.studydb import ResultsDB
    >>> from connsim.studytasks import execute
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\nrule = ["uniform", "igq"]\n'
    ...                     'compression = [10, 100, 1000]\n[settings]\narch = "lenet-5"\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\ncurves = ["rule"]\n')
    >>> study = load_study(path)
    >>> db = ResultsDB(study.database)
    >>> for t in study.tasks():  # what connsim.studyrun.run_study does, without Dask
    ...     db.record(t.hash, t.kind, t.config, execute(t.kind, t.config, __version__), __version__)
    >>> p = progress(study, db)
    >>> p.total, p.done, p.pending
    (6, 6, 0)
    """
    hashes = {t.hash for t in study.tasks()}
    statuses = db.statuses()
    done = sum(statuses.get(h) == "done" for h in hashes)
    failed = sum(statuses.get(h) == "failed" for h in hashes)
    seconds = sum(r.get("seconds") or 0.0 for r in db.rows(sorted(hashes))
                  if r["status"] == "done")
    return Progress(total=len(hashes), done=done, failed=failed,
                    pending=len(hashes) - done - failed,
                    other_rows=len(set(statuses) - hashes), task_seconds=seconds)


def export_columns(study: Study) -> list[str]:
    """Columns of an export: hash and status, configuration, results, derived, then timings."""
    return (["hash", "status"] + list(study.columns) + list(study.kind.results)
            + list(study.derived) + ["seconds", "worker", "version", "error"])


def export(study: Study, db: ResultsDB, path: str, fmt: str = "csv") -> int:
    r"""Write the study's rows to ``path`` (atomically); returns the number of rows.

    Columns: ``hash`` and ``status``, the configuration, the results, the derived columns, then
    ``seconds``, ``worker``, ``version`` and ``error``.

    Parameters
    ----------
    study : Study
        The study.
    db : ResultsDB
        Its results database.
    path : str
        The file to write, ``.csv`` or ``.parquet``.
    fmt : {'csv', 'parquet'}
        ``csv`` needs nothing more; ``parquet`` needs pyarrow (``pip install 'connsim[parquet]'``).

    Returns
    -------
    int
        The number of rows written.

    Raises
    ------
    ValueError
        For another format, or a path whose suffix does not match it.
    ImportError
        For ``parquet`` without pyarrow.

    See Also
    --------
    results : The rows as dicts.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from connsim import __version__
    >>> from connsim.study import load_study
    >>> from connsim.studydb import ResultsDB
    >>> from connsim.studytasks import execute
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\nrule = ["uniform", "igq"]\n'
    ...                     'compression = [10, 100, 1000]\n[settings]\narch = "lenet-5"\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\ncurves = ["rule"]\n')
    >>> study = load_study(path)
    >>> db = ResultsDB(study.database)
    >>> for t in study.tasks():  # what connsim.studyrun.run_study does, without Dask
    ...     db.record(t.hash, t.kind, t.config, execute(t.kind, t.config, __version__), __version__)
    >>> export(study, db, str(path.with_suffix(".csv")))
    6
    """
    from ._validation import check_choice

    fmt = check_choice(fmt, EXPORT_FORMATS, "format")
    check_writable(path, (f".{fmt}",), what="--out")
    rows = results(study, db)
    columns = export_columns(study)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("parquet export needs pyarrow: pip install 'connsim[parquet]'; "
                              "or use --format csv") from None
        table = pa.table({c: [_plain(r.get(c)) for r in rows] for c in columns})
        with atomic_write(path, ".parquet") as tmp:
            pq.write_table(table, tmp)
        return len(rows)
    with atomic_write(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return len(rows)


def _plain(value):
    return str(value) if isinstance(value, list | dict) else value


# ------------------------------------------------------------------------------ figures


@dataclass(frozen=True)
class Curve:
    r"""One curve of a study figure.

    Points with the mean and standard deviation of y over the seeds (and any axis the figure does
    not name), and the theory at the same points.

    Attributes
    ----------
    panel : tuple
        The values of the figure's ``panels`` columns.
    label : str
        The values of its ``curves`` columns, joined.
    values : tuple
        The values of its ``curves`` columns.
    x, y, y_std : ndarray
        Per point: the mean x, the mean and standard deviation (ddof 0) of the finite y values.
    n : ndarray
        Rows with a finite y behind each point.
    theory : ndarray or None
        The mean of the figure's ``theory`` column at each point.

    See Also
    --------
    curves : Computes them.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from connsim import __version__
    >>> from connsim.study import load_study
    >>> from connsim.studydb import ResultsDB
    >>> from connsim.studytasks import execute
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\nrule = ["uniform", "igq"]\n'
    ...                     'compression = [10, 100, 1000]\n[settings]\narch = "lenet-5"\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\ncurves = ["rule"]\n')
    >>> study = load_study(path)
    >>> db = ResultsDB(study.database)
    >>> for t in study.tasks():  # what connsim.studyrun.run_study does, without Dask
    ...     db.record(t.hash, t.kind, t.config, execute(t.kind, t.config, __version__), __version__)
    >>> curves(study, results(study, db), study.figures["f"])[1].label
    'igq'
    """

    panel: tuple
    label: str
    values: tuple
    x: np.ndarray
    y: np.ndarray
    y_std: np.ndarray
    n: np.ndarray  # rows with a finite y behind each point
    theory: np.ndarray | None


def curves(study: Study, rows: list[dict], figure: Figure) -> list[Curve]:
    r"""The curves of ``figure`` from the study's rows (see :class:`Curve`).

    A point is the set of rows that agree on every axis except ``seed``: x is their mean, y the
    mean and standard deviation (ddof 0) of their finite values (an infinite effective
    compression, a disconnected network, is left out of the mean; y is ``nan`` where no value is
    finite, and the theory is still drawn there).

    Parameters
    ----------
    study : Study
        The study.
    rows : list of dict
        Its rows, from :func:`results`.
    figure : Figure
        One of ``study.figures``.

    Returns
    -------
    list of Curve
        One curve per panel and label, points sorted by x.

    See Also
    --------
    plot_figure : Draws them.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from connsim import __version__
    >>> from connsim.study import load_study
    >>> from connsim.studydb import ResultsDB
    >>> from connsim.studytasks import execute
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\nrule = ["uniform", "igq"]\n'
    ...                     'compression = [10, 100, 1000]\n[settings]\narch = "lenet-5"\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\ncurves = ["rule"]\n')
    >>> study = load_study(path)
    >>> db = ResultsDB(study.database)
    >>> for t in study.tasks():  # what connsim.studyrun.run_study does, without Dask
    ...     db.record(t.hash, t.kind, t.config, execute(t.kind, t.config, __version__), __version__)
    >>> [(c.label, c.y.round().tolist()) for c in curves(study, results(study, db), study.figures["f"])]
    [('uniform', [11.0, 1289.0, 28922350.0]), ('igq', [10.0, 135.0, 97716.0])]
    """
    rows = [r for r in rows if r["status"] == "done"
            and all(r.get(k) == v for k, v in figure.where)]
    point_axes = [a for a in study.axes if a != "seed"]
    groups: dict = {}
    for r in rows:
        panel = tuple(r.get(c) for c in figure.panels)
        values = tuple(_hashable(r.get(c)) for c in figure.curves)
        label = ", ".join(str(v) for v in values) or figure.y
        key = tuple(_hashable(r.get(a)) for a in point_axes)
        groups.setdefault((panel, label, values), {}).setdefault(key, []).append(r)
    out = []
    for (panel, label, values), points in groups.items():
        xs, ys, sd, ns, th = [], [], [], [], []
        for members in points.values():
            y = np.array([_num(r.get(figure.y)) for r in members])
            y = y[np.isfinite(y)]
            x = np.array([_num(r.get(figure.x)) for r in members])
            x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            xs.append(x.mean())
            ys.append(y.mean() if y.size else math.nan)
            sd.append(y.std() if y.size else math.nan)
            ns.append(y.size)
            if figure.theory:
                th.append(np.nanmean([_num(r.get(figure.theory)) for r in members]))
        order = np.argsort(xs, kind="stable")
        out.append(Curve(panel=panel, label=label, values=values, x=np.asarray(xs)[order],
                         y=np.asarray(ys)[order], y_std=np.asarray(sd)[order],
                         n=np.asarray(ns)[order],
                         theory=np.asarray(th)[order] if figure.theory else None))
    return out


def _curve_styles(data: list[Curve]) -> dict:
    """Curve values -> (colour, marker, line style): the first ``curves`` column picks the
    colour (tab10, or tab20 past ten values), the second the marker and line style."""
    firsts = list(dict.fromkeys(c.values[:1] for c in data))
    seconds = list(dict.fromkeys(c.values[1:] for c in data))
    palette = "tab10" if len(firsts) <= 10 else "tab20"
    from .plots import _plt

    cmap = _plt().get_cmap(palette)
    markers, lines = "os^Dv<>p", ("-", "--", ":", "-.")
    return {c.values: (cmap(firsts.index(c.values[:1]) % cmap.N),
                       markers[seconds.index(c.values[1:]) % len(markers)],
                       lines[seconds.index(c.values[1:]) % len(lines)]) for c in data}


def _num(value) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    return float(value)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def plot_figure(study: Study, rows: list[dict], name: str, path: str | None = None):
    r"""Draw the study's figure ``name``; saved to ``path`` when given. Returns the figure.

    One panel per value of the figure's ``panels`` columns, one curve per ``curves`` value:
    markers with mean ± std over seeds, the theory (when declared) as a line of the same colour;
    without a theory, the markers are joined by a thin line. With two or more ``curves`` columns
    the first picks the colour and the second the marker and line style (``snip, direct`` and
    ``snip, effective`` share a colour); many curves put the legend beside the panel. On a log y
    axis the view ends at 30 times the largest measured value, since the theory's
    N / E[effective] grows without bound past the collapse.

    Parameters
    ----------
    study : Study
        The study.
    rows : list of dict
        Its rows, from :func:`results`.
    name : str
        A figure the study declares.
    path : str, optional
        An image file (``.png``, ``.pdf``, ``.svg``), written atomically.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Raises
    ------
    ValueError
        For a figure the study does not declare, or an unwritable path.

    See Also
    --------
    curves : The data of each curve.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from connsim import __version__
    >>> from connsim.study import load_study
    >>> from connsim.studydb import ResultsDB
    >>> from connsim.studytasks import execute
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\nrule = ["uniform", "igq"]\n'
    ...                     'compression = [10, 100, 1000]\n[settings]\narch = "lenet-5"\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\ncurves = ["rule"]\n')
    >>> study = load_study(path)
    >>> db = ResultsDB(study.database)
    >>> for t in study.tasks():  # what connsim.studyrun.run_study does, without Dask
    ...     db.record(t.hash, t.kind, t.config, execute(t.kind, t.config, __version__), __version__)
    >>> fig = plot_figure(study, results(study, db), "f", str(path.with_suffix(".png")))
    >>> path.with_suffix(".png").stat().st_size > 0
    True
    """
    from .plots import _plt

    if name not in study.figures:
        raise ValueError(f"figure must be one of {', '.join(study.figures) or '(none declared)'}"
                         f", got {name!r}; declare it under [figures.{name}] in {study.path}")
    if path is not None:
        check_writable(path, (".png", ".pdf", ".svg"), what="--out")
    fig_spec = study.figures[name]
    data = curves(study, rows, fig_spec)
    panels = list(dict.fromkeys(c.panel for c in data)) or [()]
    plt = _plt()
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    style = _curve_styles(data)
    outside = len(style) > 8  # the legend beside each panel, which widens by its width
    fig, axes = plt.subplots(nrows, cols, figsize=((4.8 + 2.4 * outside) * cols, 3.9 * nrows),
                             squeeze=False, constrained_layout=True)
    for k, panel in enumerate(panels):
        ax = axes.flat[k]
        measured = np.concatenate([c.y for c in data if c.panel == panel] + [[np.nan]])
        for c in (c for c in data if c.panel == panel):
            color, marker, line = style[c.values]
            ax.errorbar(c.x, c.y, yerr=c.y_std, marker=marker, ms=3.5, color=color, capsize=2,
                        ls="none" if c.theory is not None else line, lw=0.9, label=c.label)
            if c.theory is not None:
                ax.plot(c.x, c.theory, "-", color=color, lw=1.2, alpha=0.8)
        ax.set_xscale(fig_spec.xscale)
        ax.set_yscale(fig_spec.yscale)
        if fig_spec.yscale == "log" and np.isfinite(measured).any():
            # the theory grows without bound past the collapse: keep the measured range in view
            ax.set_ylim(top=30 * np.nanmax(measured))
        ax.set_xlabel(fig_spec.x.replace("_", " "))
        ax.set_ylabel(fig_spec.y.replace("_", " "))
        ax.grid(True, which="both", alpha=0.25)
        ax.set_title(", ".join(f"{v}" for v in panel) or fig_spec.title or study.name,
                     fontsize=9)
        if outside:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        else:
            ax.legend(fontsize=7)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if fig_spec.title and panels != [()]:
        fig.suptitle(fig_spec.title + (" (lines: theory)" if fig_spec.theory else ""))
    if path is not None:
        with atomic_write(path, os.path.splitext(path)[1]) as tmp:
            fig.savefig(tmp, dpi=130, format=os.path.splitext(path)[1][1:])
    return fig
