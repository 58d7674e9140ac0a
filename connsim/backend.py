"""One array namespace for the trainer: NumPy by default, CuPy when installed and asked for.

The trainer's code is written once against the subset of the NumPy API that CuPy also provides;
:func:`get_backend` returns the module to use. Random numbers are always drawn with NumPy on the
host (then moved), so the same seed gives the same initialisation and batches on either backend.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "cupy")


def get_backend(name: str = "numpy"):
    """The array module for ``name`` ('numpy' or 'cupy').

    Raises
    ------
    ImportError
        If CuPy is asked for but not installed (install the ``gpu`` extra) or finds no GPU.
    """
    if name == "numpy":
        return np
    if name != "cupy":
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    try:
        import cupy
    except ImportError:
        raise ImportError("backend 'cupy' needs CuPy: pip install 'connsim[gpu]'") from None
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA runtime errors have several types
        raise ImportError(f"backend 'cupy' found no usable GPU: {e}") from None
    return cupy


def to_numpy(a) -> np.ndarray:
    """A host NumPy copy of an array of either backend."""
    return a.get() if hasattr(a, "get") else np.asarray(a)
