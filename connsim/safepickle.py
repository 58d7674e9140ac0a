"""Restricted unpickling: only an explicit allowlist of globals may be loaded.

A pickle can name any importable callable (``os.system``, ``builtins.eval``) and the standard
unpickler will call it. connsim never unpickles through the standard unpickler: every pickle it reads
(PyTorch state dicts, dataset batches) goes through :class:`RestrictedUnpickler`, which maps each
allowed ``(module, name)`` to a replacement chosen by connsim and refuses everything else.

Hostile data meets three further limits, so that it fails with an exception instead of exhausting
memory or crashing the interpreter:

- The unpickler is Python's pure-Python one (``pickle._Unpickler``). The C unpickler allocates a
  memo as long as the largest index a pickle names (a 6-byte opcode makes it fill gigabytes) and a
  buffer as long as a length prefix claims, before reading it; the pure-Python one keeps its memo
  in a dict and never holds more bytes than the pickle has.
- Tuples and frozensets may nest at most :data:`MAX_DEPTH` levels: hashing a tuple nested a
  million levels deep (a dict key, say) overflows the C stack.
- A pickle may restore state (``BUILD``) only into instances of the types its reader lists, after
  that reader's check of the state: NumPy's own ``__setstate__`` crashes the interpreter on some
  corrupt dtype states, and restoring state into an allowed global would change how later files
  are read.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping

MAX_DEPTH = 64


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle asked for something connsim does not accept: a global not on the allowlist, or a
    state it may not restore."""


def _nesting_checked(load, count):
    """Wrap the loader of an opcode that builds a tuple or frozenset from the ``count`` topmost
    stack items (``None``: every item since the mark) so that it tracks nesting depth."""
    def checked(self):
        items = self.stack if count is None else self.stack[-count:]
        depth = 1 + max((self._depths.get(id(x), 0) for x in items), default=0)
        if depth > MAX_DEPTH:
            raise pickle.UnpicklingError(
                f"{self._what} nests tuples more than {MAX_DEPTH} levels deep; it is corrupt or "
                "hostile (array and tensor files never do)"
            )
        load(self)
        self._depths[id(self.stack[-1])] = depth
        self._keep.append(self.stack[-1])  # keeps the id unique while it is in _depths
    return checked


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves globals only through ``allowed``.

    Parameters
    ----------
    file : binary file object
    allowed : mapping of (module, name) to object
        What each permitted global resolves to.
    persistent_load : callable, optional
        Handler for persistent ids (used by PyTorch's zip format).
    what : str
        Description of the file for error messages.
    states : mapping of type to callable, optional
        The types whose instances the pickle may restore state into (``BUILD``), each with a
        check that raises :class:`UnsafePickleError` for a state it does not accept. ``BUILD`` on
        anything else is refused.
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    for _code, _load, _count in ((pickle.TUPLE, pickle._Unpickler.load_tuple, None),
                                 (pickle.TUPLE1, pickle._Unpickler.load_tuple1, 1),
                                 (pickle.TUPLE2, pickle._Unpickler.load_tuple2, 2),
                                 (pickle.TUPLE3, pickle._Unpickler.load_tuple3, 3),
                                 (pickle.FROZENSET, pickle._Unpickler.load_frozenset, None)):
        dispatch[_code[0]] = _nesting_checked(_load, _count)
    del _code, _load, _count

    def __init__(self, file, allowed: Mapping, persistent_load: Callable | None = None,
                 what: str = "pickle", states: Mapping | None = None, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = dict(allowed)
        self._persistent = persistent_load
        self._what = what
        self._states = dict(states or {})
        self._depths: dict[int, int] = {}
        self._keep: list = []

    def find_class(self, module, name):
        """The allowed class ``module.name``; anything else is refused."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._what} refers to {f'{module}.{name}'[:200]}, which connsim does not load: "
                "only plain arrays and tensors are accepted (never code). If you made this file, "
                "save plain arrays (e.g. a state_dict of tensors, or .npz) instead."
            ) from None

    def persistent_load(self, pid):
        """Resolve a persistent id with the loader given, if any."""
        if self._persistent is None:
            raise UnsafePickleError(f"{self._what} uses persistent ids, which are not accepted here")
        return self._persistent(pid)

    def load_build(self):
        """Restore an object's state only for allowed types, after checking the state."""
        state, inst = self.stack[-1], self.stack[-2]
        check = next((c for t, c in self._states.items() if isinstance(inst, t)), None)
        if check is None:
            raise UnsafePickleError(f"{self._what} restores the state of a "
                                    f"{type(inst).__name__[:100]}, which connsim does not accept")
        check(state)
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def restricted_loads(data: bytes, allowed: Mapping, what: str = "pickle", **kwargs):
    """Unpickle ``data`` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, what=what, **kwargs).load()
