"""One array namespace for the trainer: NumPy by default, CuPy when installed and asked for.

The trainer's code is written once against the subset of the NumPy API that CuPy also provides;
:func:`get_backend` returns the module to use. Random numbers are always drawn with NumPy on the
host (then moved), so the same seed gives the same initialisation and batches on either backend.
Host copies are made only through :func:`to_numpy` (explicit, as CuPy requires).

Backends are a registry: :func:`register_backend` adds one (the test suite registers a strict
CPU double of CuPy, ``tests/strict.py``, that refuses implicit device-to-host conversion).
On NumPy, a few steps run as fused Numba kernels instead (:func:`fused_kernels`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validation import check_choice


def _cupy():
    try:
        import cupy
    except ImportError:
        raise ImportError("backend 'cupy' needs CuPy: pip install 'connsim[gpu]'") from None
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA runtime errors have several types
        raise ImportError(f"backend 'cupy' found no usable GPU: {e}") from None
    return cupy


_BACKENDS: dict[str, Callable] = {"numpy": lambda: np, "cupy": _cupy}
BACKENDS = ("numpy", "cupy")  # the built-in ones (the command line offers these)


def register_backend(name: str, factory: Callable) -> None:
    """Make ``factory()`` (returning an array namespace) available as backend ``name``.

    Parameters
    ----------
    name : str
        The backend's name, as ``backend=`` and ``--backend`` take it.
    factory : callable
        Called without arguments when the backend is first used; returns the namespace.

    See Also
    --------
    get_backend : Looks the name up.

    Examples
    --------
    >>> import numpy as np
    >>> register_backend("numpy-alias", lambda: np)
    >>> get_backend("numpy-alias") is np
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    _BACKENDS[name] = factory


def backend_names() -> tuple[str, ...]:
    """Every registered backend name.

    Returns
    -------
    tuple of str
        ``'numpy'``, ``'cupy'`` and any name given to :func:`register_backend`.

    See Also
    --------
    get_backend : The array namespace of a name.

    Examples
    --------
    >>> backend_names()[:2]
    ('numpy', 'cupy')
    """
    return tuple(_BACKENDS)


def get_backend(name: str = "numpy"):
    """The array module for ``name`` ('numpy', 'cupy', or a registered backend).

    Parameters
    ----------
    name : str
        The backend.

    Returns
    -------
    module
        The array namespace (``numpy``, ``cupy``, or what the backend's factory returns).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the registered ones).
    ImportError
        If CuPy is asked for but not installed (install the ``gpu`` extra) or finds no GPU.

    See Also
    --------
    register_backend : Add a backend.
    to_numpy : Bring an array back to the host.

    Examples
    --------
    >>> get_backend("numpy").__name__
    'numpy'
    """
    return _BACKENDS[check_choice(name, _BACKENDS, "backend", "register_backend adds one")]()


def to_numpy(a, copy: bool = False) -> np.ndarray:
    """A host NumPy array of an array of any backend (``.get()``, a copy, for device arrays).

    Parameters
    ----------
    a : array
        A NumPy or device array.
    copy : bool
        Copy a NumPy array too (else it is returned as it is).

    Returns
    -------
    numpy.ndarray
        The array on the host.

    See Also
    --------
    get_backend : The namespaces arrays come from.

    Examples
    --------
    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if hasattr(a, "get"):
        return a.get()
    return np.array(a) if copy else np.asarray(a)


_FUSED: list = []


def fused_kernels(xp):
    """The trainer's fused Numba kernels (``connsim.trainer._fused``) for arrays of ``xp``.

    Parameters
    ----------
    xp : module
        An array namespace from :func:`get_backend`.

    Returns
    -------
    module or None
        The kernels when ``xp`` is NumPy and Numba compiles (not under ``NUMBA_DISABLE_JIT``,
        where they would run as Python loops); else None, and the array versions run.

    See Also
    --------
    get_backend : The namespaces.

    Examples
    --------
    >>> kernels = fused_kernels(get_backend("numpy"))  # None under NUMBA_DISABLE_JIT
    >>> kernels is None or callable(kernels.sgd_update)
    True
    """
    if xp is not np:
        return None
    if not _FUSED:
        from . import _fused  # Numba loads when a NumPy network first needs a kernel

        _FUSED.append(_fused if _fused.JIT else None)
    return _FUSED[0]
