"""Restricted unpickling: only an explicit allowlist of globals may be loaded.

A pickle can name any importable callable (``os.system``, ``builtins.eval``) and the standard
unpickler will call it. connsim never unpickles through the standard unpickler: every pickle it reads
(PyTorch state dicts, dataset batches) goes through :class:`RestrictedUnpickler`, which maps each
allowed ``(module, name)`` to a replacement chosen by connsim and refuses everything else.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle asked for a global that is not on the allowlist."""


class RestrictedUnpickler(pickle.Unpickler):
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
    """

    def __init__(self, file, allowed: Mapping, persistent_load: Callable | None = None,
                 what: str = "pickle", **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = dict(allowed)
        self._persistent = persistent_load
        self._what = what

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._what} refers to {module}.{name}, which connsim does not load: only plain "
                "arrays and tensors are accepted (never code). If you made this file, save plain "
                "arrays (e.g. a state_dict of tensors, or .npz) instead."
            ) from None

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f"{self._what} uses persistent ids, which are not accepted here")
        return self._persistent(pid)


def restricted_loads(data: bytes, allowed: Mapping, what: str = "pickle", **kwargs):
    """Unpickle ``data`` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, what=what, **kwargs).load()
