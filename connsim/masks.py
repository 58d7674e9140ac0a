"""The validation boundary for masks: any accepted input becomes one canonical form.

Canonical masks are a ``dict`` from prunable-layer name to a C-contiguous ``bool`` array in
PyTorch layout (dense ``(out, in)``, conv ``(out, in, kh, kw)``), in the architecture's layer order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .architectures import Architecture

LAYOUTS = ("torch", "keras")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def from_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Convert one weight-shaped array from ``layout`` to PyTorch layout."""
    _check_layout(layout)
    if layout == "torch" or array.ndim not in (2, 4):
        return array
    return array.T if array.ndim == 2 else array.transpose(3, 2, 0, 1)


def to_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Convert one weight-shaped array from PyTorch layout to ``layout``."""
    _check_layout(layout)
    if layout == "torch" or array.ndim not in (2, 4):
        return array
    return array.T if array.ndim == 2 else array.transpose(2, 3, 1, 0)


def as_mask(values, where: str) -> np.ndarray:
    """Turn one array-like into a boolean mask, refusing NaN and non-binary values."""
    a = np.asarray(values)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{where}: masks must be boolean or numeric 0/1 arrays, got dtype {a.dtype}")
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ValueError(f"{where}: mask contains NaN; masks must be 0/1 or boolean")
    bad = (a != 0) & (a != 1)
    if bad.any():
        raise ValueError(
            f"{where}: mask is not binary (found {a[bad].flat[0]!r}); masks must hold only 0 and 1 "
            "(to turn weights into a mask use weights != 0)"
        )
    return a != 0


def check_masks(arch: Architecture, masks: Mapping, *, layout: str = "torch") -> dict:
    """Validate masks against an architecture and return them in canonical form.

    Parameters
    ----------
    arch : Architecture
    masks : mapping of str to array_like
        One binary array per prunable layer, keyed by layer name.
    layout : {'torch', 'keras'}
        Layout of the given arrays: PyTorch ``(out, in)`` / ``(out, in, kh, kw)`` or Keras/JAX
        ``(in, out)`` / ``(kh, kw, in, out)``.

    Returns
    -------
    dict of str to ndarray of bool
        PyTorch-layout, C-contiguous masks in the architecture's layer order.

    Raises
    ------
    TypeError
        If ``masks`` is not a mapping or an entry is not numeric/boolean.
    ValueError
        On missing or unknown layer names, wrong shapes, NaN or non-binary values.
    """
    _check_layout(layout)
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping from layer name to array, got {type(masks)}")
    names = arch.layer_names
    unknown = [k for k in masks if k not in names]
    missing = [k for k in names if k not in masks]
    if unknown or missing:
        raise ValueError(
            f"masks do not match architecture {arch.name!r}: unknown layers {unknown}, "
            f"missing layers {missing}; expected exactly {list(names)}"
        )
    out = {}
    for name in names:
        where = f"mask of layer {name!r}"
        m = as_mask(masks[name], where)
        m = from_layout(m, layout)
        expected = arch.weight_shape(name)
        if m.shape != expected:
            hint = " (pass layout='keras' for (in, out) / (kh, kw, in, out) arrays)" if (
                sorted(m.shape) == sorted(expected) and layout == "torch") else ""
            raise ValueError(
                f"{where}: expected shape {expected} in PyTorch layout, got {m.shape}{hint}"
            )
        out[name] = np.ascontiguousarray(m)
    return out


def ones_masks(arch: Architecture) -> dict:
    """All-kept (dense) masks for every prunable layer."""
    return {n.name: np.ones(arch.weight_shape(n), dtype=bool) for n in arch.layers}
