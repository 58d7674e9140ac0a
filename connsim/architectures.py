"""Architectures as data: a DAG of nodes that drives the graph, the quotas, the theory and the trainer.

An :class:`Architecture` is an ordered tuple of :class:`Node` objects in topological order. Node
``0`` is the input; the last node is the output (the logits). Every node names the nodes it reads
(``inputs``) and carries its output shape: ``(C, H, W)`` for spatial nodes, ``(n,)`` for vectors.

Node operations
---------------
``input``
    The network input.
``dense``
    Fully connected layer, weight ``(out, in)`` (prunable).
``conv``
    2-D convolution, weight ``(out, in/groups, kh, kw)``, with stride, zero padding and
    ``groups`` (prunable): output channel ``o`` reads the ``in/groups`` input channels of its
    group; ``groups = in = out`` is a depthwise convolution.
``pool``
    Average or max pooling over a window (``mode`` 'avg' or 'max'); global average pooling is a
    pool whose window is the whole feature map.
``flatten``
    ``(C, H, W) -> (C*H*W,)`` in PyTorch order: unit index = c*H*W + h*W + w.
``add``
    Elementwise sum of two or more nodes of equal shape (residual connections).
``concat``
    Channel concatenation of two or more maps of equal height and width (or vectors).

A flatten may feed dense layers only. What each operation does for the graph, the theory and the
position level is in :mod:`connsim.ops`.

``batchnorm`` and the activation (``relu=True``, or ``activation`` one of :data:`ACTIVATIONS`)
describe what follows a node in the trainable model; they do not change connectivity.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ArchBuilder", "Architecture", "Node", "SpecError", "from_dict", "load_arch", "parse_shape",
]


PRUNABLE_OPS = ("dense", "conv")
ACTIVATIONS = ("relu", "scaled-tanh")  # scaled-tanh: LeCun's 1.7159 tanh(2x/3)


@dataclass(frozen=True)
class Node:
    """One node of an architecture DAG (see the module docstring for the operations).

    Nodes are made by :class:`ArchBuilder` (or read from a spec file), which computes and checks
    every shape; they are immutable.

    Attributes
    ----------
    name : str
        Unique name of the node (``conv1``, ``layer1.0.add``).
    op : {'input', 'dense', 'conv', 'pool', 'flatten', 'add', 'concat'}
        The operation.
    inputs : tuple of str
        Names of the nodes it reads (empty for the input).
    shape : tuple of int
        Output shape: ``(C, H, W)`` for spatial nodes, ``(n,)`` for vectors.
    kernel, stride, padding : tuple of int
        Window of a conv or pool, as ``(height, width)`` pairs.
    mode : str
        ``'max'`` or ``'avg'`` for a pool, else empty.
    groups : int
        Groups of a conv (1: dense connectivity; the input channels: depthwise).
    bias, batchnorm : bool
        Whether the trainable layer has a bias and is followed by BatchNorm.
    activation : str
        ``'relu'``, ``'scaled-tanh'`` or empty: what follows the node in the trainable model.

    See Also
    --------
    Architecture : The network the nodes form.
    ArchBuilder : Appends nodes with checked shapes.

    Examples
    --------
    >>> from connsim import get_arch
    >>> node = get_arch("lenet-5")["conv1"]
    >>> node.op, node.shape, node.kernel, node.prunable
    ('conv', (6, 28, 28), (5, 5), True)
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    mode: str = ""
    groups: int = 1
    bias: bool = False
    batchnorm: bool = False
    activation: str = ""  # one of ACTIVATIONS, or "" for none

    @property
    def relu(self) -> bool:
        """Whether a ReLU follows the node."""
        return self.activation == "relu"

    @property
    def prunable(self) -> bool:
        """Whether the node has a weight that pruning masks (dense or conv)."""
        return self.op in PRUNABLE_OPS

    @property
    def channels(self) -> int:
        """Number of channels (spatial nodes) or units (vector nodes)."""
        return self.shape[0]

    @property
    def size(self) -> int:
        """Number of scalar positions in the node's output."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Architecture:
    """An immutable, validated network description.

    Use :func:`connsim.get_arch` for the built-in zoo, :func:`load_arch` for a spec file, or
    :class:`ArchBuilder` in code. One description drives the graph, the quota rules, the theory and
    the trainer. ``arch[name]`` is the node called ``name``.

    Attributes
    ----------
    name : str
        The network's name (a zoo name such as ``'vgg-19'``, or the spec file's ``name``).
    nodes : tuple of Node
        Every node in topological order: node 0 is the input, the last node the output (logits).

    See Also
    --------
    connsim.zoo.get_arch : A zoo architecture by name, or a spec file.
    ArchBuilder : Build one layer by layer.
    from_dict : Build one from its spec-file form.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> arch.layer_names, arch.total_params, arch.is_chain
    (('fc1', 'fc2', 'fc3'), 266200, True)
    >>> arch.weight_shape("fc1")
    (300, 784)
    """

    name: str
    nodes: tuple[Node, ...]
    _index: dict = field(init=False, repr=False, compare=False)
    _shapes: dict = field(init=False, repr=False, compare=False)  # weight shapes, as asked for

    def __post_init__(self):
        object.__setattr__(self, "_index", {n.name: i for i, n in enumerate(self.nodes)})
        object.__setattr__(self, "_shapes", {})

    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[self._index[name]]
        except KeyError:
            raise KeyError(
                f"architecture {self.name!r} has no node {name!r}; nodes are {list(self._index)}"
            ) from None

    def index(self, name: str) -> int:
        """Position of node ``name`` in :attr:`nodes`."""
        return self._index[name]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the input node."""
        return self.nodes[0].shape

    @property
    def output(self) -> Node:
        """The last node: the classifier's output."""
        return self.nodes[-1]

    @property
    def layers(self) -> tuple[Node, ...]:
        """The prunable layers (dense and conv), in topological order."""
        return tuple(n for n in self.nodes if n.prunable)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the prunable layers, in node order."""
        return tuple(n.name for n in self.layers)

    def weight_shape(self, layer: str | Node) -> tuple[int, ...]:
        """Weight shape of a prunable layer in PyTorch layout."""
        node = self[layer] if isinstance(layer, str) else layer
        mine = node.name in self._index and self.nodes[self._index[node.name]] is node
        if mine and node.name in self._shapes:
            return self._shapes[node.name]
        from .ops import OPS

        if not node.prunable:
            raise ValueError(f"node {node.name!r} ({node.op}) has no prunable weight")
        shape = OPS[node.op].weight_shape(node, self)
        if mine:  # a node of this (immutable) architecture: its shape never changes
            self._shapes[node.name] = shape
        return shape

    def n_params(self, layer: str | Node) -> int:
        """Number of prunable weights of ``layer``."""
        return math.prod(self.weight_shape(layer))

    @property
    def total_params(self) -> int:
        """Number of prunable weights N (biases and BatchNorm are not counted)."""
        return sum(self.n_params(n) for n in self.layers)

    @property
    def is_chain(self) -> bool:
        """True when every node reads exactly the node before it (no skip connections)."""
        return all(
            n.inputs == (self.nodes[i - 1].name,) for i, n in enumerate(self.nodes) if i > 0
        )

    def summary(self) -> list[dict]:
        """One row per prunable layer: name, kind, weight shape (PyTorch layout), params."""
        return [
            {
                "name": n.name,
                "kind": n.op,
                "shape": list(self.weight_shape(n)),
                "params": self.n_params(n),
            }
            for n in self.layers
        ]

    def to_dict(self) -> dict:
        """Spec-file form (the inverse of :func:`from_dict`)."""
        layers = []
        for n in self.nodes[1:]:
            d = {"name": n.name, "type": n.op, "inputs": list(n.inputs)}
            if n.op in ("dense", "conv"):
                d["out"] = n.channels
                d["bias"] = n.bias
                d["batchnorm"] = n.batchnorm
                d.update(_activation_spec(n))
            if n.op in ("conv", "pool"):
                d["kernel"] = list(n.kernel)
                d["stride"] = list(n.stride)
            if n.op == "conv":
                d["padding"] = list(n.padding)
                if n.groups != 1:
                    d["groups"] = n.groups
            if n.op == "pool":
                d["mode"] = n.mode
            if n.op == "add":
                d.update(_activation_spec(n))
            layers.append(d)
        return {"name": self.name, "input": list(self.input_shape), "layers": layers}


def _activation_spec(node: Node) -> dict:
    """A node's activation in spec form: ``relu = true`` (the common case) or ``activation``."""
    if node.activation in ("", "relu"):
        return {"relu": node.relu}
    return {"activation": node.activation}


def _activation(relu: bool, activation: str | None, where: str) -> str:
    """The activation a builder call asks for (``relu=True`` is ``activation='relu'``)."""
    if activation is None or activation == "":
        return "relu" if relu else ""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {list(ACTIVATIONS)}, got "
                         f"{activation!r}")
    if relu and activation != "relu":
        raise ValueError(f"{where}: give relu=True or activation={activation!r}, not both")
    return activation


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer or a pair of integers, got {value!r}") from None
    return a, b


class ArchBuilder:
    """Build an :class:`Architecture` layer by layer, computing and checking every shape.

    Each method appends a node that reads the previous node unless ``src`` (a node name, or a
    list of names for :meth:`add`) says otherwise, and returns the new node's name.

    Parameters
    ----------
    name : str
        Name of the architecture.
    input_shape : sequence of int
        ``(C, H, W)`` for images, ``(n,)`` for vectors.

    See Also
    --------
    Architecture : What :meth:`build` returns.
    from_dict : The same from a spec file's dict form.

    Examples
    --------
    >>> b = ArchBuilder("tiny", (1, 8, 8))
    >>> c = b.conv(4, 3, padding=1)
    >>> _ = b.pool("max", 2)
    >>> _ = b.flatten()
    >>> _ = b.dense(10)
    >>> b.build().total_params
    676
    """

    def __init__(self, name: str, input_shape: Sequence[int]):
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (1, 3) or any(s <= 0 for s in shape):
            raise ValueError(
                f"input_shape must be (n,) or (C, H, W) with positive sizes, got {tuple(input_shape)}"
            )
        self.name = name
        self._nodes: list[Node] = [Node("input", "input", (), shape)]
        self._names = {"input"}
        self._counts: dict[str, int] = {}

    @property
    def last(self) -> Node:
        """The most recently added node."""
        return self._nodes[-1]

    def __getitem__(self, name: str) -> Node:
        """The node called ``name`` added so far."""
        return self._src(name)

    def _new_name(self, op: str, name: str | None) -> str:
        if name is None:
            self._counts[op] = self._counts.get(op, 0) + 1
            name = f"{op}{self._counts[op]}"
            while name in self._names:
                self._counts[op] += 1
                name = f"{op}{self._counts[op]}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"layer names must be non-empty strings, got {name!r}")
        if name in self._names:
            raise ValueError(f"duplicate layer name {name!r}: every node needs a unique name")
        return name

    def _src(self, src: str | None) -> Node:
        if src is None:
            return self._nodes[-1]
        for n in self._nodes:
            if n.name == src:
                return n
        raise ValueError(
            f"unknown input node {src!r}; it must be defined earlier (known: {sorted(self._names)})"
        )

    def _append(self, node: Node) -> str:
        flat = [s for s in node.inputs if self._src(s).op == "flatten"]
        if flat and node.op != "dense":
            raise ValueError(f"{node.op} node {node.name!r} reads flatten node {flat[0]!r}; a "
                             "flatten may feed dense layers only")
        self._nodes.append(node)
        self._names.add(node.name)
        return node.name

    def dense(self, out: int, *, src=None, name=None, bias=True, batchnorm=False, relu=False,
              activation=None):
        """Fully connected layer with ``out`` units; its input must be a vector (use flatten).

        ``relu=True`` or ``activation`` (one of :data:`ACTIVATIONS`) sets what follows it (after
        BatchNorm when ``batchnorm``)."""
        s = self._src(src)
        name = self._new_name("dense", name)
        if len(s.shape) != 1:
            raise ValueError(
                f"dense layer {name!r} reads {s.name!r} of shape {s.shape}; insert a flatten first"
            )
        if int(out) <= 0:
            raise ValueError(f"layer {name!r}: out must be a positive number of units, got {out}")
        return self._append(
            Node(name, "dense", (s.name,), (int(out),), bias=bias, batchnorm=batchnorm,
                 activation=_activation(relu, activation, f"layer {name!r}"))
        )

    def conv(
        self, out, kernel, *, stride=1, padding=0, groups=1, src=None, name=None, bias=False,
        batchnorm=False, relu=False, activation=None,
    ):
        """2-D convolution; ``padding`` is an int, a pair, 'valid' or 'same' (odd kernels).

        ``groups`` splits the input and output channels into that many groups (both counts must
        be divisible by it); each output channel reads only the input channels of its group.
        ``groups`` equal to the number of input channels is a depthwise convolution.
        """
        s = self._src(src)
        name = self._new_name("conv", name)
        if len(s.shape) != 3:
            raise ValueError(f"conv layer {name!r} needs a (C, H, W) input, {s.name!r} is {s.shape}")
        k = _pair(kernel, f"layer {name!r}: kernel")
        st = _pair(stride, f"layer {name!r}: stride")
        if padding == "valid":
            pad = (0, 0)
        elif padding == "same":
            if k[0] % 2 == 0 or k[1] % 2 == 0:
                raise ValueError(f"layer {name!r}: padding 'same' needs an odd kernel, got {k}")
            pad = (k[0] // 2, k[1] // 2)
        else:
            pad = _pair(padding, f"layer {name!r}: padding")
        if int(out) <= 0 or min(k) <= 0 or min(st) <= 0 or min(pad) < 0:
            raise ValueError(
                f"layer {name!r}: out, kernel and stride must be positive and padding >= 0"
            )
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0 \
                or s.channels % groups or int(out) % groups:
            raise ValueError(f"layer {name!r}: groups must be a positive integer that divides "
                             f"both the {s.channels} input and the {int(out)} output channels, "
                             f"got {groups!r}")
        _, h, w = s.shape
        ho = (h + 2 * pad[0] - k[0]) // st[0] + 1
        wo = (w + 2 * pad[1] - k[1]) // st[1] + 1
        if ho <= 0 or wo <= 0:
            raise ValueError(
                f"layer {name!r}: a {k} kernel does not fit the {h}x{w} input with padding {pad}"
            )
        return self._append(
            Node(name, "conv", (s.name,), (int(out), ho, wo), k, st, pad, groups=groups,
                 bias=bias, batchnorm=batchnorm,
                 activation=_activation(relu, activation, f"layer {name!r}"))
        )

    def pool(self, mode, kernel=2, *, stride=None, src=None, name=None):
        """Average ('avg') or max ('max') pooling, no padding; stride defaults to the kernel."""
        s = self._src(src)
        name = self._new_name("pool", name)
        if mode not in ("avg", "max"):
            raise ValueError(f"layer {name!r}: pool mode must be 'avg' or 'max', got {mode!r}")
        if len(s.shape) != 3:
            raise ValueError(f"pool layer {name!r} needs a (C, H, W) input, {s.name!r} is {s.shape}")
        k = _pair(kernel, f"layer {name!r}: kernel")
        st = k if stride is None else _pair(stride, f"layer {name!r}: stride")
        c, h, w = s.shape
        ho, wo = (h - k[0]) // st[0] + 1, (w - k[1]) // st[1] + 1
        if min(k) <= 0 or min(st) <= 0 or ho <= 0 or wo <= 0:
            raise ValueError(f"layer {name!r}: pooling window {k} does not fit the {h}x{w} input")
        return self._append(Node(name, "pool", (s.name,), (c, ho, wo), k, st, mode=mode))

    def global_pool(self, *, src=None, name=None):
        """Global average pooling: a pool whose window is the whole feature map."""
        s = self._src(src)
        if len(s.shape) != 3:
            raise ValueError(f"global pooling needs a (C, H, W) input, {s.name!r} is {s.shape}")
        return self.pool("avg", s.shape[1:], src=src, name=name)

    def flatten(self, *, src=None, name=None):
        """Add a flatten node: ``(C, H, W) -> (C*H*W,)``."""
        s = self._src(src)
        name = self._new_name("flatten", name)
        return self._append(Node(name, "flatten", (s.name,), (s.size,)))

    def add(self, srcs: Sequence[str], *, name=None, relu=False, activation=None):
        """Elementwise sum of nodes of equal shape (a residual connection)."""
        nodes = [self._src(x) for x in srcs]
        name = self._new_name("add", name)
        if len(nodes) < 2:
            raise ValueError(f"add node {name!r} needs at least two inputs")
        shapes = {n.shape for n in nodes}
        if len(shapes) != 1:
            raise ValueError(
                f"add node {name!r}: inputs have different shapes "
                f"{ {n.name: n.shape for n in nodes} }"
            )
        return self._append(
            Node(name, "add", tuple(n.name for n in nodes), nodes[0].shape,
                 activation=_activation(relu, activation, f"add node {name!r}"))
        )

    def concat(self, srcs: Sequence[str], *, name=None):
        """Channel concatenation, in the given order, of maps of equal height and width (or of
        vectors)."""
        nodes = [self._src(x) for x in srcs]
        name = self._new_name("concat", name)
        if len(nodes) < 2:
            raise ValueError(f"concat node {name!r} needs at least two inputs")
        if len({n.shape[1:] for n in nodes}) != 1:
            raise ValueError(
                f"concat node {name!r}: inputs must agree in all but the channel axis, got "
                f"{ {n.name: n.shape for n in nodes} }"
            )
        shape = (sum(n.channels for n in nodes), *nodes[0].shape[1:])
        return self._append(Node(name, "concat", tuple(n.name for n in nodes), shape))

    def build(self) -> Architecture:
        """The validated :class:`Architecture` of the nodes added so far."""
        if len(self._nodes) < 2 or not any(n.prunable for n in self._nodes):
            raise ValueError(f"architecture {self.name!r} has no prunable (dense or conv) layer")
        used = {i for n in self._nodes for i in n.inputs}
        dangling = [n.name for n in self._nodes[:-1] if n.name not in used]
        if dangling:
            raise ValueError(
                f"architecture {self.name!r}: nodes {dangling} feed nothing; only the last node "
                "may be an output"
            )
        return Architecture(self.name, tuple(self._nodes))


class SpecError(ValueError):
    """An architecture spec (a ``.toml``/``.json`` file or its dict form) is malformed.

    A subclass of :class:`ValueError`; the message names the file, the layer and the key at fault.

    See Also
    --------
    from_dict : Raises it for a malformed dict.
    load_arch : Raises it for a malformed file.

    Examples
    --------
    >>> try:
    ...     from_dict({"input": [4], "layers": [{"type": "dense"}]})
    ... except SpecError as e:
    ...     print("refused")
    refused
    """


_SPEC_KEYS = {
    "dense": {"out", "bias", "batchnorm", "relu", "activation"},
    "conv": {"out", "kernel", "stride", "padding", "groups", "bias", "batchnorm", "relu",
             "activation"},
    "pool": {"mode", "kernel", "stride"},
    "global_pool": set(),
    "flatten": set(),
    "add": {"relu", "activation"},
    "concat": set(),
}
_BOOL_KEYS = ("bias", "batchnorm", "relu")
_PAIR_KEYS = ("kernel", "stride", "padding")


def _spec_int(value, what: str) -> int:
    """An integer of a spec: an int, or a float with an integral value (3.0); never a bool."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise SpecError(f"{what} must be an integer, got {reprlib.repr(value)}")


def _spec_pair(value, what: str):
    """An integer or a list of two integers, as a spec gives a kernel, stride or padding."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise SpecError(f"{what} must be an integer or a list of two, got {reprlib.repr(value)}")
        return tuple(_spec_int(v, what) for v in value)
    return _spec_int(value, what)


def _spec_name(value, what: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a string (a node name), got {reprlib.repr(value)}")
    return value


def _spec_layer(b: ArchBuilder, k: int, layer) -> None:
    """Add layer number ``k`` of a spec to ``b``, checking every value's type first."""
    if not isinstance(layer, Mapping):
        raise SpecError(f"layer {k} must be a table/object with a 'type', got {reprlib.repr(layer)}")
    layer = dict(layer)
    name = layer.pop("name", None)
    if name is not None:
        name = _spec_name(name, f"layer {k}: 'name'")
    where = f"layer {k} ({name or 'unnamed'})"
    kind = layer.pop("type", None)
    if not isinstance(kind, str) or kind not in _SPEC_KEYS:
        raise SpecError(f"{where}: type must be one of {sorted(_SPEC_KEYS)}, got {reprlib.repr(kind)}")
    inputs = layer.pop("inputs", None)
    src = layer.pop("input", None)
    if src is not None:
        src = _spec_name(src, f"{where}: 'input'")
    if inputs is not None:
        if not isinstance(inputs, list | tuple):
            raise SpecError(f"{where}: 'inputs' must be a list of node names, got "
                            f"{reprlib.repr(inputs)}")
        inputs = [_spec_name(x, f"{where}: 'inputs'") for x in inputs]
        if kind not in ("add", "concat"):
            if len(inputs) != 1:
                raise SpecError(f"{where}: only 'add' and 'concat' layers take several inputs")
            src = inputs[0]
    unknown = set(layer) - _SPEC_KEYS[kind]
    if unknown:
        raise SpecError(
            f"{where}: unknown keys {sorted(map(str, unknown))} for type {kind!r}; "
            f"allowed: {sorted(_SPEC_KEYS[kind])}"
        )
    for key, value in layer.items():
        what = f"{where}: {key!r}"
        if key in _BOOL_KEYS and not isinstance(value, bool):
            raise SpecError(f"{what} must be true or false, got {reprlib.repr(value)}")
        if key in ("out", "groups"):
            layer[key] = _spec_int(value, what)
        elif key == "padding" and value in ("same", "valid"):
            pass
        elif key in _PAIR_KEYS:
            layer[key] = _spec_pair(value, what)
        elif key == "activation" and value not in ACTIVATIONS:
            raise SpecError(f"{what} must be one of {list(ACTIVATIONS)}, got {reprlib.repr(value)}")
        elif key == "mode" and not isinstance(value, str):
            raise SpecError(f"{what} must be 'avg' or 'max', got {reprlib.repr(value)}")
    if kind in ("dense", "conv") and "out" not in layer:
        raise SpecError(f"{where}: a {kind} layer needs 'out', its number of "
                        + ("units" if kind == "dense" else "channels"))
    if kind in ("add", "concat"):
        if inputs is None:
            raise SpecError(f"{where}: an {kind!r} layer needs 'inputs', a list of node names")
        getattr(b, kind)(inputs, name=name, **layer)
    elif kind == "dense":
        b.dense(layer.pop("out"), src=src, name=name, **layer)
    elif kind == "conv":
        b.conv(layer.pop("out"), layer.pop("kernel", 3), src=src, name=name, **layer)
    elif kind == "pool":
        b.pool(layer.pop("mode", "max"), layer.pop("kernel", 2), src=src, name=name, **layer)
    elif kind == "global_pool":
        b.global_pool(src=src, name=name)
    else:
        b.flatten(src=src, name=name)


def from_dict(spec: Mapping) -> Architecture:
    """Build an architecture from its spec-file form.

    The form is ``{"name": str, "input": [C, H, W] or [n], "layers": [layer, ...]}`` where each
    layer has ``type`` (dense, conv, pool, global_pool, flatten, add, concat), an optional
    ``name``, an optional ``input`` (a node name; default: the previous layer) or, for ``add`` and
    ``concat``, ``inputs`` (a list of node names), and the type's own keys: dense ``out``; conv
    ``out, kernel, stride, padding, groups``; pool ``mode, kernel, stride``; dense/conv ``bias,
    batchnorm, relu`` (or ``activation``: ``"relu"``, ``"scaled-tanh"``); add ``relu`` or
    ``activation``.
    Sizes are integers (``3.0`` is accepted as 3, ``2.7`` and ``true`` are not); ``kernel``,
    ``stride`` and ``padding`` may also be pairs, ``padding`` also ``"same"`` or ``"valid"``.

    Parameters
    ----------
    spec : mapping
        The spec, as read from a ``.toml`` or ``.json`` file.

    Returns
    -------
    Architecture
        The checked architecture.

    Raises
    ------
    SpecError
        For anything malformed; the message names the layer and the key.

    See Also
    --------
    load_arch : Read the same form from a file.
    Architecture.to_dict : The inverse.

    Examples
    --------
    >>> spec = {"name": "tiny", "input": [1, 6, 6], "layers": [
    ...     {"type": "conv", "out": 4, "kernel": 3, "relu": True},
    ...     {"type": "global_pool"}, {"type": "flatten"}, {"type": "dense", "out": 3}]}
    >>> arch = from_dict(spec)
    >>> arch.layer_names, arch.total_params
    (('conv1', 'dense1'), 48)
    """
    try:
        if not isinstance(spec, Mapping) or "input" not in spec or "layers" not in spec:
            raise SpecError("an architecture spec needs the keys 'input' (shape) and 'layers' "
                            f"(a list) at its top level, got {reprlib.repr(spec)}")
        name = spec.get("name", "custom")
        if not isinstance(name, str):
            raise SpecError(f"'name' must be a string, got {reprlib.repr(name)}")
        shape, layers = spec["input"], spec["layers"]
        if not isinstance(shape, list | tuple):
            raise SpecError(f"'input' must be a list of sizes, [C, H, W] or [n], got "
                            f"{reprlib.repr(shape)}")
        if not isinstance(layers, list | tuple):
            raise SpecError(f"'layers' must be a list of tables/objects, got {reprlib.repr(layers)}")
        b = ArchBuilder(name, [_spec_int(s, "each 'input' entry") for s in shape])
        for k, layer in enumerate(layers):
            _spec_layer(b, k, layer)
        return b.build()
    except SpecError:
        raise
    except ValueError as e:  # what ArchBuilder finds: shapes that do not fit, unknown nodes
        raise SpecError(str(e)) from None
    except (TypeError, KeyError, AttributeError, RecursionError, OverflowError) as e:
        raise SpecError(f"the architecture spec is malformed ({type(e).__name__}: "
                        f"{str(e)[:300]})") from None


def load_arch(path: str | os.PathLike) -> Architecture:
    r"""Read an architecture spec file (``.toml`` or ``.json``); see :func:`from_dict`.

    Parameters
    ----------
    path : str or path-like
        The spec file. Wherever connsim takes an architecture name (``--arch``,
        :func:`connsim.get_arch`), a path to such a file works too.

    Returns
    -------
    Architecture
        The architecture the file describes.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SpecError
        If it cannot be read or parsed, or does not describe a valid architecture (the message
        names the file, and the layer and key at fault).

    See Also
    --------
    from_dict : The same from the dict form.
    connsim.zoo.get_arch : Zoo names and spec files alike.

    Examples
    --------
    A TOML spec of a small residual net:

    >>> import os, tempfile
    >>> text = "\n".join([
    ...     'name = "tiny-res"', "input = [3, 8, 8]",
    ...     "[[layers]]", 'name = "stem"', 'type = "conv"', "out = 4", "kernel = 3", "padding = 1",
    ...     "[[layers]]", 'name = "c1"', 'type = "conv"', "out = 4", "kernel = 3", "padding = 1",
    ...     "[[layers]]", 'type = "add"', 'inputs = ["stem", "c1"]',
    ...     "[[layers]]", 'type = "global_pool"', "[[layers]]", 'type = "flatten"',
    ...     "[[layers]]", 'type = "dense"', "out = 10"])
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny_res.toml")
    >>> with open(path, "w") as f:
    ...     _ = f.write(text)
    >>> arch = load_arch(path)
    >>> arch.name, arch.layer_names, arch.is_chain
    ('tiny-res', ('stem', 'c1', 'dense1'), False)
    """
    path = os.fspath(path)
    if not path.endswith((".toml", ".json")):
        raise SpecError(f"architecture spec {path!r} must end in .toml or .json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"architecture spec {path!r} does not exist") from None
    except IsADirectoryError:
        raise SpecError(f"{path!r} is a directory; an architecture spec file (.toml or .json) is "
                        "expected") from None
    except OSError as e:
        raise SpecError(f"cannot read architecture spec {path!r}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
        spec = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except RecursionError:
        raise SpecError(f"architecture spec {path!r} is nested too deeply to be a spec") from None
    except ValueError as e:  # UnicodeDecodeError, TOMLDecodeError, JSONDecodeError
        raise SpecError(f"architecture spec {path!r} is not valid: {str(e)[:300]}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"architecture spec {path!r} must be a table/object at its top level "
                        f"(with 'input' and 'layers'), got {reprlib.repr(spec)}")
    spec.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    try:
        return from_dict(spec)
    except SpecError as e:
        raise SpecError(f"architecture spec {path!r}: {e}") from None


def parse_shape(text: str | Iterable[int]) -> tuple[int, ...]:
    """Parse an input shape given as '3,32,32', '3x32x32' or a sequence of ints.

    Parameters
    ----------
    text : str or iterable of int
        The shape, as the command line's ``--input-shape`` takes it, or already as numbers.

    Returns
    -------
    tuple of int
        The shape.

    Raises
    ------
    ValueError
        If a part of the text is not an integer.

    See Also
    --------
    connsim.zoo.get_arch : Takes the parsed shape as ``input_shape``.

    Examples
    --------
    >>> parse_shape("3,32,32"), parse_shape("1x28x28"), parse_shape([784])
    ((3, 32, 32), (1, 28, 28), (784,))
    """
    if isinstance(text, str):
        parts = text.replace("x", ",").replace("×", ",").split(",")
        try:
            return tuple(int(p) for p in parts if p.strip())
        except ValueError:
            raise ValueError(f"input shape must look like '3,32,32' or '784', got {text!r}") from None
    return tuple(int(p) for p in text)
