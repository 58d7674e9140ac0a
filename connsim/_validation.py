"""The validation boundary for arguments: every public entry point checks its inputs here.

A check returns its argument in canonical form or raises :class:`InvalidArgument` (a ``ValueError``;
:class:`InvalidType` is a ``TypeError`` as well) whose message reads::

    <argument> must be <what>, got <value>; <fix>

The command line restates the same ``what`` and ``fix`` for its options (:mod:`connsim.cli._common`).

The names an argument may take are defined once: a fixed set as a tuple next to the code that
acts on it (:data:`LEVELS` here, ``GRANULARITIES``, ``MASK_MODELS``, ``SCOPES``), an open set as a
:class:`Registry` (quota rules in :mod:`connsim.quotas`, pruning scores in :mod:`connsim.scores`).
:class:`Names` lists several of them as one live sequence, so a name registered later is valid
everywhere, the command line's choices included.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

LEVELS = ("channel", "position")  # channel-level topology, or exact position level


class InvalidArgument(ValueError):
    """An argument outside its domain.

    Parameters
    ----------
    name : str
        The argument, as the caller spells it.
    what : str
        What the argument must be (``"a number in [0, 1]"``).
    value : object
        The value given; shown by :func:`show` unless ``got`` describes it.
    fix : str
        How to fix the call; may be empty.
    got : str, optional
        A description of the value to show instead of the value itself.
    """

    def __init__(self, name: str, what: str, value=None, fix: str = "", *, got: str | None = None):
        self.name, self.what, self.fix = name, what, fix
        self.got = show(value) if got is None else got
        super().__init__(f"{name} must be {what}, got {self.got}" + (f"; {fix}" if fix else ""))


class InvalidType(InvalidArgument, TypeError):
    """An argument of the wrong type: both a ``ValueError`` and a ``TypeError``."""


def show(value) -> str:
    """``value`` as a message shows it: numbers plainly (``nan``, ``1.5``), text quoted, arrays as lists.

    Examples
    --------
    >>> show(np.float64(0.5)), show("pixel"), show(np.array([0.1, np.nan]))
    ('0.5', "'pixel'", '[0.1, nan]')
    """
    if isinstance(value, np.ndarray):
        return np.array2string(value, separator=", ", threshold=12)
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


# ----------------------------------------------------------------------------- names


def check_choice(value, choices: Iterable[str], name: str, fix: str = "") -> str:
    """``value`` if it is one of ``choices``.

    Examples
    --------
    >>> check_choice("pixel", LEVELS, "level")
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidArgument: level must be one of channel, position, got 'pixel'
    """
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(name, "one of " + ", ".join(choices), value, fix)
    return value


def check_level(level) -> str:
    """``level`` if it is a level of the effective masks (:data:`LEVELS`)."""
    return check_choice(level, LEVELS, "level",
                        "'channel' for channel-level topology, 'position' for the exact level")


class Registry(Mapping):
    """Named functions of one kind, in the order they were added; new ones come by :meth:`add`.

    Parameters
    ----------
    kind : str
        What an entry is, as messages name it (``"rule"``, ``"method"``).
    entries : mapping of str to callable
        The built-in entries.
    """

    def __init__(self, kind: str, entries: Mapping[str, Callable]):
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Callable:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, name: str, fn: Callable, taken: Iterable[str] = ()) -> None:
        """Add ``fn`` under ``name``, which must be new here and not in ``taken``."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidType("name", f"a non-empty string naming the {self.kind}", name)
        if name in self or name in taken:
            raise InvalidArgument("name", f"a new {self.kind} name", name,
                                  f"{name!r} is already a {self.kind}; choose another name")
        if not callable(fn):
            raise InvalidType("fn", "callable", fn, "register a function, not its result")
        self._entries[name] = fn


class Names(Sequence):
    """Several registries and tuples of names, read as one live sequence of names.

    A name added to one of the registries later is part of it, so ``", ".join(names)``,
    ``name in names`` and argparse ``choices=names`` always see the current names.
    """

    def __init__(self, *parts: Iterable[str]):
        self._parts = parts

    def _names(self) -> tuple[str, ...]:
        return tuple(n for part in self._parts for n in part)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


# ----------------------------------------------------------------------------- numbers


def _interval(low, high, low_open: bool, high_open: bool, kind: str) -> str:
    """How a message names the values ``kind`` may take between ``low`` and ``high``."""
    low, high = (x if x is None or isinstance(x, numbers.Integral) else f"{x:g}" for x in (low, high))
    if low is not None and high is not None and low_open and high_open:
        return f"{kind} strictly between {low} and {high}"
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind


def check_real(value, name: str, low: float | None = None, high: float | None = None, *,
               low_open: bool = False, high_open: bool = False, fix: str = "") -> float:
    """``value`` as a float if it is a finite real number (not a bool) within the bounds given.

    Examples
    --------
    >>> check_real(0.5, "momentum", 0, 1, high_open=True)
    0.5
    >>> check_real(float("nan"), "lr", 0, low_open=True)
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidArgument: lr must be a finite number > 0, got nan
    """
    what = _interval(low, high, low_open, high_open,
                     "a number" if low is not None and high is not None else "a finite number")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidType(name, what, value, fix)
    x = float(value)
    if not math.isfinite(x) or (low is not None and (x <= low if low_open else x < low)) or (
            high is not None and (x >= high if high_open else x > high)):
        raise InvalidArgument(name, what, value, fix)
    return x


def check_int(value, name: str, low: int | None = 0, high: int | None = None, *,
              fix: str = "") -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[low, high]``.

    Examples
    --------
    >>> check_int(2.5, "rounds", 1)
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidType: rounds must be an integer >= 1, got 2.5
    """
    what = _interval(low, high, False, False, "an integer")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidType(name, what, value, fix)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgument(name, what, value, fix)
    return int(value)


def check_fraction(value, name: str, *, open: bool = False, fix: str = "") -> float:
    """``value`` as a float in [0, 1] (``open``: strictly between 0 and 1)."""
    return check_real(value, name, 0, 1, low_open=open, high_open=open, fix=fix)


def check_density(value, name: str = "density", *, open: bool = False) -> float:
    """A density (fraction of weights kept) in [0, 1] (``open``: strictly between 0 and 1).

    Examples
    --------
    >>> check_density(1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidArgument: density must be a number in [0, 1], got 1.5; ...
    """
    return check_fraction(value, name, open=open,
                          fix="a density is the fraction of weights kept (compression C is "
                              "density 1/C)")


def check_compression(value, name: str = "compression", *, strict: bool = False) -> float:
    """A compression (total / kept weights): finite and >= 1 (``strict``: > 1)."""
    return check_real(value, name, 1, low_open=strict,
                      fix="compression is total / kept weights, 1 keeps every weight; for "
                          "nothing kept give density 0")


def check_samples(samples, name: str = "samples") -> int:
    """A number of samples: an integer >= 1."""
    return check_int(samples, name, 1, fix="ask for at least one sample")


def check_densities(values, names: Sequence[str], name: str = "densities", *,
                    bounded: bool = True, fix: str = "") -> np.ndarray:
    """Per-layer densities as a float array: one number per layer of ``names``, no NaN and, if
    ``bounded``, each in [0, 1].

    Examples
    --------
    >>> check_densities([0.1, np.nan], ("fc1", "fc2"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidArgument: densities must be 2 numbers in [0, 1], ... got [0.1, nan]
    """
    what = (f"{len(names)} numbers{' in [0, 1]' if bounded else ''}, one per layer "
            f"{list(names)}")
    try:
        d = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidType(name, what, values, fix) from None
    if d.shape != (len(names),) or np.isnan(d).any() or (bounded and ((d < 0) | (d > 1)).any()):
        raise InvalidArgument(name, what, d if d.ndim == 1 else values, fix)
    return d


# ----------------------------------------------------------------------------- seeds


def check_seed(seed, name: str = "rng"):
    """``seed`` if :func:`numpy.random.default_rng` accepts it: None, an integer >= 0, a sequence
    of them, a ``SeedSequence``, a ``BitGenerator`` or a ``Generator``.

    Examples
    --------
    >>> check_seed(-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidArgument: rng must be None, an integer >= 0, ... got -1; ...
    """
    if seed is None or isinstance(seed, np.random.Generator | np.random.BitGenerator
                                  | np.random.SeedSequence):
        return seed
    what = "None, an integer >= 0, a SeedSequence or a Generator"
    fix = f"the same seed gives the same result, e.g. {name}=0"
    a = np.asarray(seed)
    if isinstance(seed, bool) or a.dtype.kind not in "iu" or a.ndim > 1:
        raise InvalidType(name, what, seed, fix)
    if (a < 0).any():
        raise InvalidArgument(name, what, seed, fix)
    return seed


def check_rng(rng, name: str = "rng") -> np.random.Generator:
    """A generator from anything :func:`check_seed` accepts."""
    return np.random.default_rng(check_seed(rng, name))


# ----------------------------------------------------------------------------- arrays


def check_quota(q, arch):
    """``q`` if it is a quota for the prunable layers of ``arch`` (in their order)."""
    if tuple(q.names) != tuple(arch.layer_names):
        raise InvalidArgument("q", f"a quota for the layers {list(arch.layer_names)} of "
                              f"{arch.name}", got=f"a quota for layers {list(q.names)}",
                              fix="compute it with connsim.quota on the same architecture")
    return q


def check_shape(shape: tuple, expected: tuple, name: str, fix: str = "") -> tuple:
    """``shape`` if it equals ``expected``."""
    shape, expected = tuple(shape), tuple(expected)
    if shape != expected:
        raise InvalidArgument(name, f"of the expected shape {expected}", got=str(shape), fix=fix)
    return shape


def check_mask(values, name: str) -> np.ndarray:
    """One array-like as a boolean mask: boolean, or numeric with only 0 and 1 (no NaN).

    Examples
    --------
    >>> check_mask([1, 0, 2], "mask of layer 'fc1'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connsim._validation.InvalidArgument: mask of layer 'fc1' must be 0/1 or boolean, got 2, ...
    """
    a = np.asarray(values)
    if a.dtype == bool:
        return a
    what = "0/1 or boolean"
    if a.dtype.kind not in "biuf":
        raise InvalidType(name, what, got=f"an array of dtype {a.dtype}")
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise InvalidArgument(name, what, got="NaN")
    bad = (a != 0) & (a != 1)
    if bad.any():
        raise InvalidArgument(name, what, got=f"{show(a[bad].flat[0])}, which is not binary",
                              fix="to turn weights into a mask use weights != 0")
    return a != 0
