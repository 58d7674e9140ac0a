"""Pruning granularity: which weights are pruned together (Heyman & Zylberberg 2024).

* ``weight``: every weight on its own;
* ``kernel``: the ``kh*kw`` entries of kernel ``(o, i)`` of a conv (a dense weight is its own
  kernel);
* ``channel``: all weights into an output channel (a row of a dense layer);
* ``node``: all weights into a unit of a dense layer (conv layers are not pruned at this
  granularity; use ``channel`` for them).

The output layer's units are the classes: at channel and node granularity they are never pruned,
and they are left out of every count, keep-fraction and quota (:func:`prunable_layers`), as are
layers a caller excludes by name pattern (``exclude=("fc", "*.shortcut")``).

A group's score aggregates its weights' scores; keep-fractions count groups. :func:`expand` turns
group masks back into weight masks.

**Unit semantics** (channel and node granularity). ``"weights"`` removes all incoming weights of a
pruned channel, which leaves its bias / BatchNorm shift as a constant output. ``"output"`` also
multiplies the unit's output by 0 (:class:`UnitMasks`): a channel after its BatchNorm and
activation, or after the residual add (and its activation) for a conv whose output only feeds an
add, the second conv of a residual block (Heyman & Zylberberg 2024); a node just before its
activation (their "pre-activation" node masks; the unit outputs ``f(0) = 0``). Node granularity
always has output semantics. For effective accounting an output-masked unit is deleted from the
graph, which also removes the next layer's input slice (and the identity path through a masked
add).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._validation import InvalidArgument, check_choice, check_shape
from .architectures import Architecture

__all__ = [
    "UnitMasks", "expand", "group_sizes", "prunable_layers", "to_groups", "unit_masks",
]


GRANULARITIES = ("weight", "kernel", "channel", "node")
SEMANTICS = ("weights", "output")
UNIT_GRANULARITIES = ("channel", "node")  # whose groups are units
AGGREGATES = ("sum", "mean", "abs-sum")  # how to_groups combines a group's values


def check_granularity(granularity) -> str:
    """``granularity`` if it is one of :data:`GRANULARITIES`."""
    return check_choice(granularity, GRANULARITIES, "granularity",
                        "prune single weights, whole kernels, whole output channels or whole "
                        "dense units (node)")


def check_semantics(granularity: str, semantics: str | None) -> str | None:
    """The unit semantics of ``granularity``: None for weight and kernel, ``'weights'`` by default
    for channel, always ``'output'`` for node."""
    check_granularity(granularity)
    if semantics is not None:
        check_choice(semantics, SEMANTICS, "semantics",
                     "'weights' removes a pruned channel's incoming weights, 'output' also zeroes "
                     "its output")
    if granularity not in UNIT_GRANULARITIES:
        return None
    if granularity == "node":
        if semantics == "weights":
            raise InvalidArgument("semantics", "'output' at node granularity", semantics,
                                  "node masks zero the unit; for weights semantics on dense "
                                  "units use channel granularity")
        return "output"
    return semantics or "weights"


def group_shape(arch: Architecture, layer: str, granularity: str) -> tuple[int, ...]:
    """Shape of the group array of one layer."""
    check_granularity(granularity)
    shape = arch.weight_shape(layer)
    if granularity == "weight":
        return shape
    if granularity == "kernel":
        return shape[:2]
    return shape[:1]


def _axes(shape: tuple, granularity: str) -> tuple[int, ...]:
    keep = {"weight": len(shape), "kernel": 2, "channel": 1, "node": 1}[granularity]
    return tuple(range(keep, len(shape)))


def to_groups(arch: Architecture, values: dict, granularity: str, how: str = "sum") -> dict:
    """Aggregate weight-shaped ``values`` over groups.

    Parameters
    ----------
    arch : Architecture
        The network.
    values : dict of str to ndarray
        One weight-shaped array per prunable layer.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (module docstring).
    how : {'sum', 'mean', 'abs-sum'}
        ``abs-sum`` is ``|sum|``, SNIP's group score.

    Returns
    -------
    dict of str to ndarray
        One array of the group shape per layer.

    See Also
    --------
    expand : The other direction, for masks.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:4-3-2")
    >>> values = {"fc1": np.arange(12.0).reshape(3, 4), "fc2": np.ones((2, 3))}
    >>> to_groups(arch, values, "channel", "mean")["fc1"].tolist()
    [1.5, 5.5, 9.5]
    """
    check_granularity(granularity)
    check_choice(how, AGGREGATES, "how")
    out = {}
    for name in arch.layer_names:
        v = np.asarray(values[name], dtype=np.float64)
        axes = _axes(v.shape, granularity)
        if not axes:
            out[name] = np.abs(v) if how == "abs-sum" else v
            continue
        s = v.mean(axis=axes) if how == "mean" else v.sum(axis=axes)
        out[name] = np.abs(s) if how == "abs-sum" else s
    return out


def expand(arch: Architecture, group_masks: dict, granularity: str) -> dict:
    """Weight masks from group masks (every weight of a kept group is kept).

    Parameters
    ----------
    arch : Architecture
        The network.
    group_masks : dict of str to ndarray of bool
        One array of the group shape of ``granularity`` per prunable layer.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (module docstring).

    Returns
    -------
    dict of str to ndarray of bool
        Weight masks in PyTorch layout.

    See Also
    --------
    to_groups : From weight-shaped values to group values.
    group_sizes : Groups per layer.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:4-3-2")
    >>> masks = expand(arch, {"fc1": np.array([True, False, True]), "fc2": np.array([True, True])},
    ...                "channel")
    >>> masks["fc1"].astype(int).tolist()
    [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    """
    check_granularity(granularity)
    out = {}
    for name in arch.layer_names:
        shape = arch.weight_shape(name)
        g = np.asarray(group_masks[name], dtype=bool)
        out[name] = np.ascontiguousarray(
            np.broadcast_to(g.reshape(g.shape + (1,) * (len(shape) - g.ndim)), shape))
    return out


def check_exclude(arch: Architecture, exclude) -> tuple[str, ...]:
    """Layer-name patterns (``fnmatch``: ``fc``, ``*.shortcut``), each matching some layer."""
    if exclude is None:
        return ()
    if isinstance(exclude, str):
        exclude = tuple(p.strip() for p in exclude.split(",") if p.strip())
    pats = tuple(exclude)
    for p in pats:
        if not isinstance(p, str) or not any(fnmatch.fnmatchcase(n, p) for n in arch.layer_names):
            raise InvalidArgument("exclude", "layer-name patterns that each match a layer", p,
                                  f"the layers of {arch.name} are {', '.join(arch.layer_names)}")
    return pats


def prunable_layers(arch: Architecture, granularity: str, exclude=()) -> tuple[str, ...]:
    """Layers whose groups may be pruned at ``granularity``.

    All prunable layers except those matching ``exclude``, the classifier at channel and node
    granularity (removing an output unit would remove a class) and conv layers at node
    granularity.

    Parameters
    ----------
    arch : Architecture
        The network.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (module docstring).
    exclude : sequence of str
        Layer-name patterns (``fnmatch``: ``fc``, ``*.shortcut``), each of which must match a
        layer.

    Returns
    -------
    tuple of str
        The layers, in order.

    Raises
    ------
    ValueError
        If a pattern matches no layer.

    See Also
    --------
    group_sizes : Groups per layer.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("resnet-20")
    >>> len(arch.layer_names), len(prunable_layers(arch, "channel", exclude=("fc", "*.shortcut")))
    (22, 19)
    """
    check_granularity(granularity)
    pats = check_exclude(arch, exclude)
    names = tuple(n for n in arch.layer_names
                  if not any(fnmatch.fnmatchcase(n, p) for p in pats)
                  and not (granularity in UNIT_GRANULARITIES and n == arch.output.name)
                  and not (granularity == "node" and arch[n].op != "dense"))
    if not names:
        what = {"channel": "hidden or convolutional channels", "node": "hidden dense units"}
        raise ValueError(f"{arch.name} has no {what.get(granularity, 'layers')} to prune at "
                         f"{granularity} granularity"
                         + (f" with exclude={list(pats)}" if pats else "")
                         + ("; the classifier's units (the classes) are always kept"
                            if granularity in UNIT_GRANULARITIES else ""))
    return names


def group_sizes(arch: Architecture, granularity: str) -> np.ndarray:
    """Number of groups in each layer.

    Parameters
    ----------
    arch : Architecture
        The network.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (module docstring).

    Returns
    -------
    ndarray of int
        One count per prunable layer: weights, kernels (``out * in / groups`` for a conv, the
        weights for a dense layer), or output channels and units.

    See Also
    --------
    prunable_layers : Which of the layers may lose groups.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-5")
    >>> group_sizes(arch, "kernel").tolist(), group_sizes(arch, "channel").tolist()
    ([18, 96, 48000, 10080, 840], [6, 16, 120, 84, 10])
    """
    return np.array([int(np.prod(group_shape(arch, n, granularity))) for n in arch.layer_names],
                    dtype=np.int64)


@dataclass(frozen=True)
class UnitMasks:
    """0/1 masks on the channels (units) of node outputs: the ``output`` unit semantics.

    Attributes
    ----------
    keep : dict of str to ndarray of bool
        Per architecture node (a conv, dense or add node), one entry per channel/unit.
    position : {'post', 'pre'}
        Where the trainer multiplies: after the node's activation (channels) or just before it
        (dense nodes; the unit outputs ``f(0) = 0``). Connectivity does not depend on it.

    See Also
    --------
    unit_masks : The unit masks that go with group-expanded weight masks.
    connsim.effective.connectivity : Deletes masked units from the graph (``units=``).

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch, measure, ones_masks
    >>> arch = get_arch("mlp:4-3-2")
    >>> units = UnitMasks({"fc1": np.array([True, False, True])})
    >>> measure(arch, ones_masks(arch), units=units).effective
    12
    """

    keep: Mapping
    position: str = "post"

    def check(self, arch: Architecture) -> UnitMasks:
        """Validated copy: known nodes, one boolean per channel, a known position."""
        check_choice(self.position, ("post", "pre"), "position", "'post' masks after the "
                                                                  "activation, 'pre' before it")
        keep = {}
        nodes = {n.name for n in arch.nodes[1:]}
        for name, k in self.keep.items():
            if name not in nodes:
                raise InvalidArgument("units", "masks keyed by node names of " + arch.name,
                                      name, "key unit masks by conv, dense or add node names")
            if arch[name].op == "flatten":
                raise InvalidArgument("units", "masks keyed by nodes with units of their own",
                                      fix="mask the channels of the node it flattens "
                                      f"({arch[name].inputs[0]!r}) instead",
                                      got=f"flatten node {name!r}")
            k = np.asarray(k)
            check_shape(k.shape, (arch[name].channels,), f"unit mask of {name!r}",
                        "one 0/1 entry per channel/unit of the node")
            if k.dtype != bool:
                if not np.isin(k, (0, 1)).all():
                    raise InvalidArgument(f"unit mask of {name!r}", "0/1 or boolean entries",
                                          got="other values", fix="1 keeps a unit, 0 masks it")
                k = k.astype(bool)
            keep[name] = k
        return UnitMasks(keep, self.position)


def unit_sites(arch: Architecture, granularity: str, exclude=()) -> dict:
    """Where the output of each prunable layer's units is masked under output semantics: the
    layer's own node, or for a conv with no activation whose only consumer is an add node, that
    add node (after the residual add). Keys: the layers of :func:`prunable_layers`."""
    layers = prunable_layers(arch, granularity, exclude)
    consumers: dict = {}
    for node in arch.nodes[1:]:
        for s in node.inputs:
            consumers.setdefault(s, []).append(node)
    sites = {}
    for name in layers:
        users = consumers.get(name, [])
        single_add = len(users) == 1 and users[0].op == "add"
        sites[name] = users[0].name if granularity == "channel" and not arch[name].activation \
            and single_add else name
    return sites


def unit_masks(arch: Architecture, masks: Mapping, granularity: str, semantics: str | None = None,
               exclude=()) -> UnitMasks | None:
    """The :class:`UnitMasks` that go with group-expanded weight ``masks`` at a unit granularity.

    Only with the output semantics (None otherwise): a unit is kept iff its row keeps a weight.
    Layers that share a site (an add) combine their masks: a site unit is kept iff kept by all.

    Parameters
    ----------
    arch : Architecture
        The network.
    masks : mapping of str to ndarray of bool
        Weight masks expanded from group masks.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (module docstring).
    semantics : {'weights', 'output'}, optional
        The channel semantics (default ``'weights'`` at channel and node granularity).
    exclude : sequence of str
        Layer-name patterns left unpruned.

    Returns
    -------
    UnitMasks or None
        None for weight and kernel granularity and for the ``weights`` semantics.

    See Also
    --------
    UnitMasks : What the trainer and the connectivity read.
    expand : Weight masks from group masks.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:4-3-2")
    >>> masks = expand(arch, {"fc1": np.array([True, False, True]), "fc2": np.array([True, True])},
    ...                "channel")
    >>> unit_masks(arch, masks, "channel", "output").keep["fc1"].tolist()
    [True, False, True]
    """
    semantics = check_semantics(granularity, semantics)
    if semantics != "output":
        return None
    keep: dict = {}
    for layer, site in unit_sites(arch, granularity, exclude).items():
        m = np.asarray(masks[layer]).reshape(arch.weight_shape(layer)[0], -1)
        row = m.any(axis=1)
        keep[site] = row if site not in keep else keep[site] & row
    return UnitMasks(keep, "pre" if granularity == "node" else "post")
