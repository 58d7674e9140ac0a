"""Direct and effective density, sparsity and compression, per layer and in total.

density d = kept / total; sparsity s = 1 - d; compression c = 1 / d (infinite when d = 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._validation import check_compression, check_density, check_fraction
from .architectures import Architecture
from .effective import Connectivity, _channel_level, _prepare, connectivity

__all__ = [
    "LayerMeasure", "Measurement", "compression_of", "measure", "resolve_density", "summarize",
]


def resolve_density(density=None, sparsity=None, compression=None) -> float:
    """Turn exactly one of density, sparsity or compression into a density in [0, 1].

    Parameters
    ----------
    density : float, optional
        Fraction of weights kept, in [0, 1].
    sparsity : float, optional
        Fraction of weights removed, in [0, 1].
    compression : float, optional
        Total over kept weights, at least 1.

    Returns
    -------
    float
        The density.

    Raises
    ------
    ValueError
        If not exactly one is given, or the one given is out of its range.

    See Also
    --------
    compression_of : From a density back to a compression.

    Examples
    --------
    >>> resolve_density(compression=100)
    0.01
    >>> resolve_density(sparsity=0.9)
    0.09999999999999998
    """
    given = {k: v for k, v in (("density", density), ("sparsity", sparsity),
                               ("compression", compression)) if v is not None}
    if len(given) != 1:
        raise ValueError(
            "give exactly one of density, sparsity or compression "
            f"(got {sorted(given) if given else 'none'})"
        )
    if density is not None:
        return check_density(density)
    if sparsity is not None:
        return 1.0 - check_fraction(sparsity, "sparsity", fix="a sparsity is the fraction of "
                                                              "weights removed")
    return 1.0 / check_compression(compression)


def compression_of(density: float) -> float:
    """1 / density, or ``inf`` when the density is 0.

    Parameters
    ----------
    density : float
        A density in [0, 1].

    Returns
    -------
    float
        The compression.

    See Also
    --------
    resolve_density : The other direction, from any of density, sparsity or compression.

    Examples
    --------
    >>> compression_of(0.01), compression_of(0.0)
    (100.0, inf)
    """
    return math.inf if density == 0 else 1.0 / density


class _Densities:
    """Direct and effective density from ``kept``, ``effective`` and ``params``."""

    @property
    def density(self) -> float:
        return self.kept / self.params

    @property
    def effective_density(self) -> float:
        return self.effective / self.params


@dataclass(frozen=True)
class LayerMeasure(_Densities):
    """One prunable layer: weights, kept and effective counts, active input and output units.

    Attributes
    ----------
    name, kind : str
        The layer's name and operation (``'dense'`` or ``'conv'``).
    shape : tuple of int
        Weight shape in PyTorch layout.
    params, kept, effective : int
        Prunable weights, kept (nonzero mask) weights, effective weights.
    units_in, units_out : int
        Channels or units of the layer's input and output.
    active_in, active_out : int
        Those of them that are on an input-output path.
    density, effective_density : float
        ``kept / params`` and ``effective / params`` (properties).

    See Also
    --------
    Measurement : The whole network; its ``layers`` are these.
    measure : Computes them.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> fc1 = measure(arch, {"fc1": np.array([[1, 1], [0, 1]]), "fc2": np.array([[1, 0]])}).layers[0]
    >>> fc1.kept, fc1.effective, fc1.active_out, fc1.effective_density
    (3, 2, 1, 0.5)
    """

    name: str
    kind: str
    shape: tuple
    params: int
    kept: int
    effective: int
    units_in: int
    units_out: int
    active_in: int
    active_out: int


@dataclass(frozen=True)
class Measurement(_Densities):
    """Direct and effective sparsity of a pruned network (see :func:`measure`).

    Attributes
    ----------
    arch, level : str
        The architecture's name and the level of the effective masks.
    params, kept, effective : int
        Prunable, kept and effective weights over all layers.
    disconnected : bool
        Whether no input-output path remains (then ``effective`` is 0).
    removable_units : int
        Inactive outputs of every prunable layer but the last (channels for convs): units that can
        be deleted with their weights.
    hidden_units : int
        Outputs of every prunable layer but the last.
    layers : tuple of LayerMeasure
        One entry per prunable layer.
    density, effective_density : float
        ``kept / params`` and ``effective / params`` (properties); ``compression`` and
        ``effective_compression`` are their inverses (``inf`` for 0).

    See Also
    --------
    measure : Computes it.
    LayerMeasure : The per-layer entries.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> m = measure(arch, {"fc1": np.array([[1, 1], [0, 1]]), "fc2": np.array([[1, 0]])})
    >>> m.compression, m.effective_compression, m.to_dict()["effective"]["kept"]
    (1.5, 2.0, 3)
    """

    arch: str
    level: str
    params: int
    kept: int
    effective: int
    disconnected: bool
    removable_units: int
    hidden_units: int
    layers: tuple[LayerMeasure, ...]

    @property
    def compression(self) -> float:
        """Direct compression ``1 / density`` (``inf`` when nothing is kept)."""
        return compression_of(self.density)

    @property
    def effective_compression(self) -> float:
        """Effective compression ``1 / effective_density`` (``inf`` when disconnected)."""
        return compression_of(self.effective_density)

    def to_dict(self) -> dict:
        """JSON-ready form; ``effective.compression`` is ``None`` when disconnected."""

        def block(kept, density, comp):
            return {"kept": kept, "density": density,
                    "sparsity": 1.0 - density,
                    "compression": None if math.isinf(comp) else comp}

        return {
            "arch": self.arch,
            "level": self.level,
            "params": self.params,
            "direct": block(self.kept, self.density, self.compression),
            "effective": block(self.effective, self.effective_density,
                               self.effective_compression),
            "disconnected": self.disconnected,
            "removable_units": self.removable_units,
            "hidden_units": self.hidden_units,
            "layers": [
                {
                    "name": m.name, "kind": m.kind, "shape": list(m.shape), "params": m.params,
                    "kept": m.kept, "effective": m.effective, "density": m.density,
                    "effective_density": m.effective_density,
                    "units_in": m.units_in, "units_out": m.units_out,
                    "active_in": m.active_in, "active_out": m.active_out,
                }
                for m in self.layers
            ],
        }


def summarize(conn: Connectivity) -> Measurement:
    """The counts of a :class:`~connsim.effective.Connectivity` result.

    Parameters
    ----------
    conn : Connectivity
        Reachability and effective masks, from :func:`connsim.effective.connectivity`.

    Returns
    -------
    Measurement
        What :func:`measure` returns for the same masks.

    See Also
    --------
    measure : Connectivity and its summary in one call.

    Examples
    --------
    >>> from connsim import connectivity, get_arch, ones_masks
    >>> arch = get_arch("mlp:4-3-2")
    >>> summarize(connectivity(arch, ones_masks(arch))).effective
    18
    """
    return _summary(conn, {name: (np.count_nonzero(conn.masks[name]),
                                  np.count_nonzero(conn.effective[name]))
                           for name in conn.arch.layer_names})


def _summary(conn: Connectivity, counts: dict) -> Measurement:
    """:func:`summarize` with each layer's ``(kept, effective)`` counts given."""
    arch = conn.arch
    units = {}  # node name: (units, active units), each node counted once

    def active(name):
        if name not in units:
            act = conn.active(name)
            units[name] = act.size, int(np.count_nonzero(act))
        return units[name]

    layers = []
    for node in arch.layers:
        (units_in, active_in), (units_out, active_out) = active(node.inputs[0]), active(node.name)
        kept, effective = counts[node.name]
        layers.append(LayerMeasure(
            name=node.name, kind=node.op, shape=arch.weight_shape(node),
            params=arch.n_params(node), kept=int(kept), effective=int(effective),
            units_in=units_in, units_out=units_out, active_in=active_in, active_out=active_out,
        ))
    hidden = [m for m in layers if m.name != arch.output.name]
    return Measurement(
        arch=arch.name, level=conn.level, params=arch.total_params,
        kept=sum(m.kept for m in layers), effective=sum(m.effective for m in layers),
        disconnected=conn.disconnected,
        removable_units=sum(m.units_out - m.active_out for m in hidden),
        hidden_units=sum(m.units_out for m in hidden),
        layers=tuple(layers),
    )


def measure(
    arch: Architecture, masks: Mapping, *, level: str = "channel", layout: str = "torch",
    units=None,
) -> Measurement:
    """Direct and effective density/compression of a pruned network, per layer and in total.

    Parameters
    ----------
    arch : Architecture
    masks : mapping of str to array_like
        Binary masks keyed by layer name.
    level : {'channel', 'position'}
        See :func:`connsim.effective.connectivity`.
    layout : {'torch', 'keras'}
        Layout of the given masks.
    units : UnitMasks, optional
        Output-masked units (the ``output`` channel semantics): deleted from the graph.

    Returns
    -------
    Measurement
        Totals, a disconnected flag, the hidden units that can be removed outright (inactive
        outputs of every prunable layer but the last; channels for convs) and one
        :class:`LayerMeasure` per layer.

    See Also
    --------
    connsim.effective.connectivity : The reachability behind the counts.
    connsim.effective.effective_masks : The effective masks themselves.
    connsim.maskio.load_masks : Read masks from a file.

    Notes
    -----
    At the channel level the counts are taken during the backward pass, and no effective mask
    is written: a forward step that stops in each row at its first kept weight from a reached
    input, then one read of every mask (a layer whose source node has no reached unit only has
    its weights counted; ``docs/performance.md``). The result equals
    ``summarize(connectivity(...))``, which writes the effective masks and counts them.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> m = measure(arch, {"fc1": np.array([[1, 1], [0, 1]]), "fc2": np.array([[1, 0]])})
    >>> m.kept, m.effective, m.removable_units
    (4, 3, 1)
    """
    if level != "channel":
        return summarize(connectivity(arch, masks, level=level, layout=layout, units=units))
    masks, keep = _prepare(arch, masks, level, layout, units)
    counts = {}  # counted in the backward pass: no effective mask is written
    return _summary(_channel_level(arch, masks, keep, counts=counts, reach=False), counts)
