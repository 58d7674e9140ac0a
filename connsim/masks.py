"""The validation boundary for masks: any accepted input becomes one canonical form.

Canonical masks are a ``dict`` from prunable-layer name to a C-contiguous ``bool`` array in
PyTorch layout (dense ``(out, in)``, conv ``(out, in, kh, kw)``), in the architecture's layer order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._validation import InvalidArgument, InvalidType, check_choice, check_mask, check_shape
from .architectures import Architecture

__all__ = [
    "check_masks", "from_layout", "ones_masks", "to_layout",
]


LAYOUTS = ("torch", "keras")


def _check_layout(layout: str) -> None:
    check_choice(layout, LAYOUTS, "layout", "'torch' for (out, in[, kh, kw]) arrays, 'keras' for "
                                            "([kh, kw,] in, out)")


def from_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Convert one weight-shaped array from ``layout`` to PyTorch layout.

    Parameters
    ----------
    array : ndarray
        A dense ``(in, out)`` or conv ``(kh, kw, in, out)`` array in Keras/JAX layout, or already in
        PyTorch layout when ``layout='torch'``. Arrays of other ranks are returned unchanged.
    layout : {'torch', 'keras'}
        The layout of ``array``.

    Returns
    -------
    ndarray
        ``(out, in)`` or ``(out, in, kh, kw)``: a transposed view, not a copy.

    Raises
    ------
    ValueError
        For another layout name.

    See Also
    --------
    to_layout : The inverse.
    check_masks : Converts every mask of a network.

    Examples
    --------
    >>> import numpy as np
    >>> from_layout(np.zeros((3, 3, 16, 32)), "keras").shape
    (32, 16, 3, 3)
    """
    _check_layout(layout)
    if layout == "torch" or array.ndim not in (2, 4):
        return array
    return array.T if array.ndim == 2 else array.transpose(3, 2, 0, 1)


def to_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Convert one weight-shaped array from PyTorch layout to ``layout``.

    Parameters
    ----------
    array : ndarray
        A dense ``(out, in)`` or conv ``(out, in, kh, kw)`` array. Arrays of other ranks are
        returned unchanged.
    layout : {'torch', 'keras'}
        The layout wanted.

    Returns
    -------
    ndarray
        The array in ``layout``: a transposed view, not a copy.

    Raises
    ------
    ValueError
        For another layout name.

    See Also
    --------
    from_layout : The inverse.

    Examples
    --------
    >>> import numpy as np
    >>> to_layout(np.zeros((32, 16, 3, 3)), "keras").shape
    (3, 3, 16, 32)
    """
    _check_layout(layout)
    if layout == "torch" or array.ndim not in (2, 4):
        return array
    return array.T if array.ndim == 2 else array.transpose(2, 3, 1, 0)


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

    See Also
    --------
    ones_masks : Dense masks in this form.
    connsim.maskio.load_masks : Reads a masks file into this form.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:4-3-2")
    >>> masks = check_masks(arch, {"fc1": np.ones((4, 3)), "fc2": np.eye(3, 2)}, layout="keras")
    >>> masks["fc1"].shape, masks["fc2"].dtype
    ((3, 4), dtype('bool'))
    """
    _check_layout(layout)
    if not isinstance(masks, Mapping):
        raise InvalidType("masks", "a mapping from layer name to array", got=str(type(masks)))
    names = arch.layer_names
    unknown = [k for k in masks if k not in names]
    missing = [k for k in names if k not in masks]
    if unknown or missing:
        raise InvalidArgument("masks", f"one array for each layer of {arch.name!r}, exactly "
                              f"{list(names)}", got=f"unknown layers {unknown}, missing layers "
                              f"{missing}")
    out = {}
    for name in names:
        where = f"mask of layer {name!r}"
        m = from_layout(check_mask(masks[name], where), layout)
        expected = arch.weight_shape(name)
        keras = sorted(m.shape) == sorted(expected) and layout == "torch"
        check_shape(m.shape, expected, where, "masks are compared in PyTorch layout"
                    + ("; pass layout='keras' for (in, out) / (kh, kw, in, out) arrays" if keras
                       else ""))
        out[name] = np.ascontiguousarray(m)
    return out


def ones_masks(arch: Architecture) -> dict:
    """All-kept (dense) masks for every prunable layer.

    Parameters
    ----------
    arch : Architecture
        The network.

    Returns
    -------
    dict of str to ndarray of bool
        One all-True array per prunable layer, in PyTorch layout.

    See Also
    --------
    check_masks : The canonical form these masks are in.
    connsim.sampling.random_masks : Random masks under a quota.

    Examples
    --------
    >>> from connsim import get_arch
    >>> masks = ones_masks(get_arch("mlp:4-3-2"))
    >>> {name: m.shape for name, m in masks.items()}
    {'fc1': (3, 4), 'fc2': (2, 3)}
    """
    return {n.name: np.ones(arch.weight_shape(n), dtype=bool) for n in arch.layers}
