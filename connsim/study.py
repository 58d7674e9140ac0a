"""Study files: a declarative sweep, checked, and expanded into hashed tasks.

A study is a TOML file::

    name = "random-effective-vs-direct"
    kind = "measure"                 # a task kind of connsim.studytasks
    description = "Random pruning: effective vs direct compression"

    [axes]                           # the grid: one task per combination
    arch = ["lenet-300-100", "vgg-19"]
    rule = ["uniform", "erk", "igq"]
    compression = { geomspace = [10, 1e5, 30] }
    seed = [0, 1, 2]

    [settings]                       # shared by every task
    level = "position"
    theory = true

    [derived]                        # columns computed from a row when reading the database
    ratio = "effective_compression / direct_compression"

    [figures.effective]              # drawn by 'connsim study plot'
    x = "direct_compression"
    y = "effective_compression"
    curves = ["rule"]                # one curve per value; mean +- std over the other axes
    panels = ["arch"]                # one panel per value
    theory = "theory_effective_compression"

    [variants.quick]                 # 'connsim study run FILE --variant quick'
    axes = { arch = ["lenet-300-100"], compression = [10, 100] }

An axis lists values, or spans ``{geomspace = [start, stop, num]}`` / ``{linspace = ...}`` /
``{range = [start, stop, step]}``. An axis whose values are tables sets several inputs at once
(``pruner = [{method = "random", rule = "igq"}, {method = "snip"}]``); the axis itself becomes a
label column (each table's ``label``, or its values joined by ``+``).

Each task's identity is the SHA-256 of its kind, its full configuration (every input, defaults
filled in) and the connsim version: the same configuration hashes the same in every process, and
any change (a value, a default, a new release) makes a new task instead of overwriting an old
one. Derived columns and figures are not part of it.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import operator
import os
import re
import tomllib
from dataclasses import dataclass

from .studytasks import REQUIRED, Kind, check_input, check_kind

__all__ = [
    "Figure", "Study", "StudyError", "Task", "load_study",
]


NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
TOP = ("name", "kind", "description", "database", "axes", "settings", "derived", "figures",
       "variants")
FIGURE_KEYS = ("x", "y", "curves", "panels", "theory", "where", "xscale", "yscale", "title")


class StudyError(ValueError):
    r"""A study file that cannot be used; the message names the file and the key.

    A subclass of :class:`ValueError`.

    See Also
    --------
    load_study : Raises it.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "bad.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\narch = ["lenet-5"]\ncompresion = [10]\n')
    >>> try:
    ...     load_study(path)
    ... except StudyError as e:
    ...     print("refused")
    refused
    """


@dataclass(frozen=True)
class Task:
    r"""One grid point: its hash, its kind and its full configuration.

    Attributes
    ----------
    hash : str
        SHA-256 of the kind, the configuration and the connsim version: the task's identity in the
        results database.
    kind : str
        The task kind (``predict``, ``montecarlo``, ``measure``, ``prune``, ``train``, ``imp``).
    config : dict
        Every input of the kind, defaults filled in.

    See Also
    --------
    Study.tasks : The tasks of a study.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\narch = ["lenet-5"]\n'
    ...                     'compression = {geomspace = [10, 1000, 3]}\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\n')
    >>> study = load_study(path)
    >>> task = study.tasks()[0]
    >>> task.kind, task.config["arch"], task.config["compression"], len(task.hash)
    ('predict', 'lenet-5', 10.0, 64)
    """

    hash: str
    kind: str
    config: dict


@dataclass(frozen=True)
class Figure:
    r"""A figure a study declares (see the module docstring).

    Attributes
    ----------
    name : str
        The figure's name, as ``connsim study plot --figure`` takes it.
    x, y : str
        The columns on the axes.
    curves, panels : tuple of str
        Columns whose values give one colour each, and one panel each.
    theory : str or None
        A column drawn as a line in the curve's colour.
    where : tuple of pairs
        ``(column, value)`` pairs a row must match.
    xscale, yscale : {'log', 'linear'}
        The axes' scales.
    title : str
        The figure's title.

    See Also
    --------
    connsim.studyresults.plot_figure : Draws it.
    connsim.studyresults.curves : Its data.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\narch = ["lenet-5"]\n'
    ...                     'compression = {geomspace = [10, 1000, 3]}\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\n')
    >>> study = load_study(path)
    >>> study.figures["f"].x, study.figures["f"].yscale
    ('direct_compression', 'log')
    """

    name: str
    x: str
    y: str
    curves: tuple[str, ...] = ()
    panels: tuple[str, ...] = ()
    theory: str | None = None
    where: tuple = ()  # (column, value) pairs a row must match
    xscale: str = "log"
    yscale: str = "log"
    title: str = ""


@dataclass(frozen=True)
class Study:
    r"""A checked study file (one variant of it).

    Attributes
    ----------
    path : str
        The study file.
    name, description : str
        From the file.
    kind : Kind
        The task kind, with its inputs and result columns.
    axes : dict
        Axis name to its list of values (tables for multi-input axes).
    settings : dict
        Inputs shared by every task.
    derived : dict of str to str
        Derived column name to its expression.
    figures : dict of str to Figure
        The declared figures.
    variant : str or None
        The variant read.
    database : str
        The results database.

    See Also
    --------
    load_study : Reads one.
    connsim.studyrun.run_study : Runs its tasks.
    connsim.studyresults.results : Reads its rows.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\narch = ["lenet-5"]\n'
    ...                     'compression = {geomspace = [10, 1000, 3]}\n'
    ...                     '[figures.f]\nx = "direct_compression"\n'
    ...                     'y = "theory_effective_compression"\n')
    >>> study = load_study(path)
    >>> study.name, study.kind.name, len(study.tasks()), study.database.endswith("s.db")
    ('s', 'predict', 3, True)
    """

    path: str
    name: str
    kind: Kind
    description: str
    axes: dict  # axis -> list of values (tables for multi-input axes)
    settings: dict
    derived: dict  # column -> expression
    figures: dict  # name -> Figure
    variant: str | None
    database: str

    @property
    def columns(self) -> tuple[str, ...]:
        """Configuration columns: the axes (in the file's order), then every other input of
        the kind."""
        return tuple(dict.fromkeys(list(self.axes) + list(self.kind.inputs)))

    def tasks(self) -> list[Task]:
        """Every grid point as a :class:`Task`, in grid order (the first axis varies slowest)."""
        from . import __version__

        names = list(self.axes)
        out = []
        for point in itertools.product(*(self.axes[a] for a in names)):
            config = {k: v for k, v in self.kind.inputs.items() if v is not REQUIRED}
            config.update(self.settings)
            for axis, value in zip(names, point, strict=True):
                if isinstance(value, dict):
                    config.update({k: v for k, v in value.items() if k != "label"})
                    config[axis] = _label(value)
                else:
                    config[axis] = value
            out.append(Task(task_hash(self.kind.name, config, __version__), self.kind.name,
                            config))
        return out


def _label(value: dict) -> str:
    return str(value.get("label", "+".join(str(v) for v in value.values())))


def task_hash(kind: str, config: dict, version: str) -> str:
    """SHA-256 of the kind, the configuration and the connsim version (canonical JSON: sorted
    keys, no whitespace), in hex.

    Examples
    --------
    >>> task_hash("predict", {"arch": "lenet-5", "compression": 10.0}, "0.1.0")[:12]
    '8b9cd3ecad2f'
    """
    text = json.dumps({"kind": kind, "config": config, "version": version}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ loading


def load_study(path: str | os.PathLike, variant: str | None = None, *,
               database: str | None = None) -> Study:
    r"""Read, check and (for ``variant``) specialise a study file.

    Parameters
    ----------
    path : str or PathLike
        The TOML file.
    variant : str, optional
        A table of ``[variants]`` whose ``axes`` and ``settings`` replace the study's own.
    database : str, optional
        The results database; default: the file's ``database`` key, else the study file's name
        with ``.db`` (``.VARIANT.db`` for a variant) beside it.

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        The file is missing or not TOML, or a key is unknown, misspelled or out of its domain;
        the message names the file and the key.

    See Also
    --------
    Study : What it returns.
    connsim.studyrun.run_study : Runs the study.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = pathlib.Path(folder, "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\narch = ["lenet-5"]\n'
    ...                     'compression = {geomspace = [10, 1000, 3]}\n')
    >>> study = load_study(path)
    >>> [t.config["compression"] for t in study.tasks()]
    [10.0, 100.0, 1000.0]
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise StudyError(f"study file {path!r} does not exist") from None
    except IsADirectoryError:
        raise StudyError(f"study file {path!r} is a directory; give a .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"{path}: not a valid TOML file: {e}") from None
    where = os.path.basename(path)
    _known(doc, TOP, where, "top-level key")
    kind = _get(doc, "kind", str, where)
    try:
        kind_ = check_kind(kind)
    except ValueError as e:
        raise StudyError(f"{where}: kind: {e}") from None
    variants = _get(doc, "variants", dict, where, {})
    axes = _get(doc, "axes", dict, where, {})
    settings = _get(doc, "settings", dict, where, {})
    if variant is not None:
        if variant not in variants:
            raise StudyError(f"{where}: no variant {variant!r}; the file has "
                             f"{', '.join(variants) or 'no variants'}")
        table = _get(variants, variant, dict, f"{where}: variants")
        _known(table, ("axes", "settings"), f"{where}: variants.{variant}", "key")
        axes = axes | _get(table, "axes", dict, f"{where}: variants.{variant}", {})
        settings = settings | _get(table, "settings", dict, f"{where}: variants.{variant}", {})
    if not axes:
        raise StudyError(f"{where}: [axes] is empty; a study needs at least one axis")
    axes = {a: _axis(a, v, kind_, where) for a, v in axes.items()}
    settings = {k: _value(k, v, kind_, where, f"settings.{k}") for k, v in settings.items()}
    _complete(kind_, axes, settings, where)
    derived = _get(doc, "derived", dict, where, {})
    for name, expr in derived.items():
        _name(name, f"{where}: derived")
        if not isinstance(expr, str):
            raise StudyError(f"{where}: derived.{name} must be an expression string, got {expr!r}")
        try:
            compile_expression(expr)
        except ValueError as e:
            raise StudyError(f"{where}: derived.{name}: {e}") from None
    study = Study(path=path, name=_get(doc, "name", str, where,
                                      os.path.splitext(os.path.basename(path))[0]),
                  kind=kind_, description=_get(doc, "description", str, where, ""), axes=axes,
                  settings=settings, derived=derived, figures={}, variant=variant,
                  database=database or _database(doc, path, variant, where))
    names = set(study.columns) | set(kind_.results) | set(derived)
    clash = set(derived) & (set(study.columns) | set(kind_.results))
    if clash:
        raise StudyError(f"{where}: derived column {sorted(clash)[0]!r} shadows a configuration "
                         "or result column; rename it")
    figures = {n: _figure(n, t, names, where)
               for n, t in _get(doc, "figures", dict, where, {}).items()}
    return Study(**{**study.__dict__, "figures": figures})


def _database(doc: dict, path: str, variant: str | None, where: str) -> str:
    name = _get(doc, "database", str, where, None)
    stem = os.path.splitext(path)[0]
    if name is None:
        return stem + (f".{variant}" if variant else "") + ".db"
    base = os.path.join(os.path.dirname(path), name)
    if variant:
        root, ext = os.path.splitext(base)
        return f"{root}.{variant}{ext}"
    return base


def _get(table: dict, key: str, kind: type, where: str, default=REQUIRED):
    if key not in table:
        if default is REQUIRED:
            raise StudyError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if not isinstance(value, kind):
        what = {dict: "a table", str: "a string", list: "a list"}[kind]
        raise StudyError(f"{where}: {key} must be {what}, got {value!r}")
    return value


def _known(table: dict, keys, where: str, what: str) -> None:
    import difflib

    for key in table:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(keys)}"
            raise StudyError(f"{where}: unknown {what} {key!r}{hint}")


def _name(name: str, where: str) -> None:
    if not NAME.match(name):
        raise StudyError(f"{where}: column name {name!r} must be lower-case letters, digits and _ "
                         "(starting with a letter)")


def _value(key: str, value, kind: Kind, where: str, path: str):
    """One input's value, checked against the kind's domain; ``path`` is its place in the file
    ``where`` (``axes.compression[3]``)."""
    if key not in kind.inputs:
        _known({key: None}, tuple(kind.inputs), f"{where}: task kind {kind.name!r}", "input")
    if isinstance(value, float) and not math.isfinite(value):
        raise StudyError(f"{where}: {path} must be finite, got {value!r}")
    try:
        return check_input(key, value, path)
    except ValueError as e:
        raise StudyError(f"{where}: {e}") from None


def _span(spec: dict, where: str) -> list:
    import numpy as np

    (how, args), = spec.items() if len(spec) == 1 else ((None, None),)
    if how not in ("geomspace", "linspace", "range") or not isinstance(args, list):
        raise StudyError(f"{where} must be a list of values or one of {{geomspace = [start, "
                         f"stop, num]}}, {{linspace = [...]}}, {{range = [start, stop, step]}}; "
                         f"got {spec!r}")
    try:
        if how == "range":
            values = list(range(*args))
        else:
            start, stop, num = args
            if isinstance(num, bool) or not isinstance(num, int) or num < 1:
                raise ValueError("num must be a positive integer")
            fn = np.geomspace if how == "geomspace" else np.linspace
            # 12 significant digits: the same grid, and the same hashes, on every platform
            values = [float(f"{v:.12g}") for v in fn(start, stop, num)]
    except (TypeError, ValueError) as e:
        raise StudyError(f"{where}: bad {how} {args!r}: {e}") from None
    return values


def _axis(axis: str, spec, kind: Kind, where: str) -> list:
    place = f"{where}: axes.{axis}"
    _name(axis, f"{where}: axes")
    values = _span(spec, place) if isinstance(spec, dict) else spec
    if not isinstance(values, list) or not values:
        raise StudyError(f"{place} must be a non-empty list of values, got {spec!r}")
    tables = [isinstance(v, dict) for v in values]
    if any(tables) and not all(tables):
        raise StudyError(f"{place}: mix of tables and plain values; use one or the other")
    out = []
    for k, v in enumerate(values):
        if all(tables):
            if axis in kind.inputs:
                raise StudyError(f"{place}: an axis of tables needs a name that is not an input "
                                 f"of kind {kind.name!r} (it becomes a label column)")
            out.append({key: (_label_text(val, f"{place}[{k}].label") if key == "label" else
                              _value(key, val, kind, where, f"axes.{axis}[{k}].{key}"))
                        for key, val in v.items()})
        else:
            out.append(_value(axis, v, kind, where, f"axes.{axis}[{k}]"))
    labels = [_label(v) if isinstance(v, dict) else json.dumps(v) for v in out]
    if len(set(labels)) != len(labels):
        raise StudyError(f"{place} repeats a value; each grid point must be distinct")
    return out


def _label_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise StudyError(f"{where} must be a string, got {value!r}")
    return value


def _complete(kind: Kind, axes: dict, settings: dict, where: str) -> None:
    given = set(settings)
    for axis, values in axes.items():
        sets = [set(v) - {"label"} if isinstance(v, dict) else {axis} for v in values]
        for k, keys in enumerate(sets):
            overlap = keys & given
            if overlap:
                raise StudyError(f"{where}: input {sorted(overlap)[0]!r} is set twice (axes.{axis}"
                                 f"{f'[{k}]' if isinstance(values[k], dict) else ''} and another "
                                 "axis or [settings]); give it once")
        given |= set().union(*sets)
    missing = [k for k, v in kind.inputs.items() if v is REQUIRED and k not in given]
    if missing:
        raise StudyError(f"{where}: task kind {kind.name!r} needs {missing[0]!r}: give it as an "
                         "axis or in [settings]")


def _figure(name: str, table, columns: set, where: str) -> Figure:
    place = f"{where}: figures.{name}"
    if not isinstance(table, dict):
        raise StudyError(f"{place} must be a table")
    _known(table, FIGURE_KEYS, place, "key")
    for key in ("x", "y"):
        _get(table, key, str, place)

    def column(c, key):
        if not isinstance(c, str) or c not in columns:
            raise StudyError(f"{place}.{key}: {c!r} is not a column; columns: "
                             f"{', '.join(sorted(columns))}")
        return c

    lists = {}
    for key in ("curves", "panels"):
        value = table.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise StudyError(f"{place}.{key} must be a list of column names")
        lists[key] = tuple(column(c, key) for c in value)
    where_ = _get(table, "where", dict, place, {})
    for c in where_:
        column(c, "where")
    for key in ("xscale", "yscale"):
        if table.get(key, "log") not in ("log", "linear"):
            raise StudyError(f"{place}.{key} must be 'log' or 'linear', got {table[key]!r}")
    theory = table.get("theory")
    return Figure(name=name, x=column(table["x"], "x"), y=column(table["y"], "y"),
                  theory=None if theory is None else column(theory, "theory"),
                  where=tuple(sorted(where_.items())), xscale=table.get("xscale", "log"),
                  yscale=table.get("yscale", "log"), title=_get(table, "title", str, place, ""),
                  **lists)


# -------------------------------------------------------------------- derived columns

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_FUNCTIONS = {"log": math.log, "log10": math.log10, "sqrt": math.sqrt, "exp": math.exp,
              "abs": abs, "min": min, "max": max}


def compile_expression(text: str):
    """A derived column's expression as a function of a row (a dict).

    Arithmetic (``+ - * / **``, unary minus), numbers, column names and the functions
    ``log, log10, sqrt, exp, abs, min, max``; nothing else is evaluated. Division by zero and
    a missing or ``None`` column give ``nan``.

    Examples
    --------
    >>> f = compile_expression("log10(effective_compression / direct_compression)")
    >>> f({"effective_compression": 1000.0, "direct_compression": 10.0})
    2.0
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{text!r} is not an expression: {e.msg}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, ast.Expression | ast.BinOp | ast.UnaryOp | ast.USub | ast.UAdd
                        | ast.Name | ast.Load | ast.Call) or type(node) in _BINARY
        ok = ok or (isinstance(node, ast.Constant) and isinstance(node.value, int | float))
        if isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords
        if not ok:
            raise ValueError(f"{text!r}: {type(node).__name__} is not allowed; use arithmetic, "
                             f"column names and {', '.join(_FUNCTIONS)}")

    def ev(node, row):
        if isinstance(node, ast.Expression):
            return ev(node.body, row)
        if isinstance(node, ast.Constant):
            return float(node.value)  # float powers overflow to nan instead of growing unbounded
        if isinstance(node, ast.Name):
            value = row.get(node.id)
            return math.nan if value is None else value
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand, row)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Call):
            return _FUNCTIONS[node.func.id](*(ev(a, row) for a in node.args))
        return _BINARY[type(node.op)](ev(node.left, row), ev(node.right, row))

    def evaluate(row: dict) -> float:
        try:
            return ev(tree, row)
        except (ZeroDivisionError, ValueError, OverflowError, TypeError):
            return math.nan

    return evaluate
