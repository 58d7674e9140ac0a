"""The built-in architecture zoo (``docs/architectures.md``) and the name registry :func:`get_arch`.

Defaults follow the reference papers' setups: LeNet-300-100 on MNIST, LeNet-5, VGG-11/13/16 and the
CIFAR ResNets on CIFAR-10, VGG-19 on CIFAR-100, ResNet-18 on Tiny ImageNet (3x64x64, 200 classes).
Hidden dense/conv layers are followed by BatchNorm and ReLU (the Connectivity Matters models);
residual blocks are conv-BN-ReLU-conv-BN, added to the shortcut, then ReLU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .architectures import ArchBuilder, Architecture, load_arch

__all__ = [
    "dbsn_mlp", "get_arch", "lenet_300_100", "lenet_5", "mlp", "mobilenet_v2", "resnet", "vgg",
]


_VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}
_CIFAR_RESNET_BLOCKS = {20: 3, 32: 5, 56: 9}

# name -> (default input shape, default classes)
_DEFAULTS = {
    "lenet-300-100": ((784,), 10),
    "dbsn-mlp": ((784,), 10),
    "lenet-5": ((3, 32, 32), 10),
    "vgg-11": ((3, 32, 32), 10),
    "vgg-13": ((3, 32, 32), 10),
    "vgg-16": ((3, 32, 32), 10),
    "vgg-19": ((3, 32, 32), 100),
    "resnet-18": ((3, 64, 64), 200),
    "resnet-20": ((3, 32, 32), 10),
    "resnet-32": ((3, 32, 32), 10),
    "resnet-56": ((3, 32, 32), 10),
    "mobilenet-v2": ((3, 32, 32), 10),
}
# MobileNetV2 stages (expansion, out channels, blocks, first stride), CIFAR variant
_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1)]

ZOO = tuple(_DEFAULTS) + ("mlp:W0-W1-...-WL",)


def _maybe_flatten(b: ArchBuilder, input_shape) -> None:
    if len(input_shape) == 3:
        b.flatten(name="flatten")


def mlp(widths: Sequence[int], input_shape=None, name=None) -> Architecture:
    """A dense chain of the given widths, with ReLU between layers.

    Parameters
    ----------
    widths : sequence of int
        Units of the input, of every hidden layer and of the output, at least two.
    input_shape : sequence of int, optional
        A ``(C, H, W)`` shape whose size equals ``widths[0]``: the input is then flattened first.
        Default ``(widths[0],)``.
    name : str, optional
        Default ``mlp:W0-W1-...``, the name :func:`get_arch` reads.

    Returns
    -------
    Architecture
        Dense layers ``fc1`` ... ``fcL``; hidden ones have BatchNorm and ReLU.

    Raises
    ------
    ValueError
        For fewer than two widths, a width that is not positive, or an input shape of another size.

    See Also
    --------
    get_arch : ``get_arch("mlp:784-300-100-10")`` is the same network.
    lenet_300_100 : The MLP of the pruning literature.

    Examples
    --------
    >>> arch = mlp([4, 8, 3])
    >>> arch.name, arch.layer_names, arch.total_params
    ('mlp:4-8-3', ('fc1', 'fc2'), 56)
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) <= 0:
        raise ValueError(f"an MLP needs at least two positive widths, got {widths}")
    shape = tuple(input_shape) if input_shape is not None else (widths[0],)
    if math.prod(shape) != widths[0]:
        raise ValueError(f"input shape {shape} has {math.prod(shape)} units, not {widths[0]}")
    b = ArchBuilder(name or "mlp:" + "-".join(map(str, widths)), shape)
    _maybe_flatten(b, shape)
    for k, w in enumerate(widths[1:], 1):
        b.dense(w, name=f"fc{k}", relu=k < len(widths) - 1)
    return b.build()


def lenet_300_100(input_shape=(784,), classes=10) -> Architecture:
    """LeNet-300-100: an MLP with hidden layers of 300 and 100 units.

    Parameters
    ----------
    input_shape : sequence of int
        ``(784,)`` (MNIST flattened), or an image shape of 784 values, which adds a flatten.
    classes : int
        Output units.

    Returns
    -------
    Architecture
        Dense layers ``fc1`` (300), ``fc2`` (100), ``fc3`` (``classes``): 266,200 weights for MNIST.

    See Also
    --------
    get_arch : Every zoo network by name, with its reference input shape and classes.

    Examples
    --------
    >>> lenet_300_100().total_params, lenet_300_100((1, 28, 28)).layer_names
    (266200, ('fc1', 'fc2', 'fc3'))
    """
    b = ArchBuilder("lenet-300-100", input_shape)
    _maybe_flatten(b, input_shape)
    b.dense(300, name="fc1", batchnorm=True, relu=True)
    b.dense(100, name="fc2", batchnorm=True, relu=True)
    b.dense(classes, name="fc3")
    return b.build()


DBSN_WIDTHS = (2500, 2000, 1500, 1000, 500)


def dbsn_mlp(input_shape=(784,), classes=10) -> Architecture:
    """The granularity paper's MLP (Heyman & Zylberberg 2024): 784-2500-2000-1500-1000-500-10.

    A scaled tanh ``1.7159 tanh(2x/3)`` follows every hidden layer, without BatchNorm. Train it
    with ``init='uniform'`` (U(-0.05, 0.05)) and Adam at 2e-5, batch 128 (``docs/granularity.md``).

    Parameters
    ----------
    input_shape : sequence of int
        ``(784,)``, or an image shape of 784 values.
    classes : int
        Output units.

    Returns
    -------
    Architecture
        11,965,000 prunable weights for MNIST.

    See Also
    --------
    get_arch : Every zoo network by name, with its reference input shape and classes.

    Examples
    --------
    >>> arch = dbsn_mlp()
    >>> arch.total_params, arch["fc1"].activation
    (11965000, 'scaled-tanh')
    """
    b = ArchBuilder("dbsn-mlp", input_shape)
    _maybe_flatten(b, input_shape)
    for k, w in enumerate(DBSN_WIDTHS, 1):
        b.dense(w, name=f"fc{k}", activation="scaled-tanh")
    b.dense(classes, name=f"fc{len(DBSN_WIDTHS) + 1}")
    return b.build()


def lenet_5(input_shape=(3, 32, 32), classes=10) -> Architecture:
    """LeNet-5: two conv layers with average pooling, then three dense layers.

    5x5 valid convolutions 3 -> 6 and 6 -> 16 channels, each followed by 2x2 average pooling, a
    flatten, then dense 120, 84 and ``classes`` units.

    Parameters
    ----------
    input_shape : sequence of int
        ``(C, H, W)``; ``(1, 28, 28)`` for MNIST gives a 16x4x4 flatten.
    classes : int
        Output units.

    Returns
    -------
    Architecture
        61,770 prunable weights at the default 3x32x32 input.

    See Also
    --------
    get_arch : Every zoo network by name, with its reference input shape and classes.

    Examples
    --------
    >>> lenet_5().total_params, lenet_5((1, 28, 28)).total_params
    (61770, 44190)
    """
    b = ArchBuilder("lenet-5", input_shape)
    b.conv(6, 5, name="conv1", bias=True, batchnorm=True, relu=True)
    b.pool("avg", 2, name="pool1")
    b.conv(16, 5, name="conv2", bias=True, batchnorm=True, relu=True)
    b.pool("avg", 2, name="pool2")
    b.flatten(name="flatten")
    b.dense(120, name="fc1", batchnorm=True, relu=True)
    b.dense(84, name="fc2", batchnorm=True, relu=True)
    b.dense(classes, name="fc3")
    return b.build()


def vgg(depth: int, input_shape=(3, 32, 32), classes=10) -> Architecture:
    """CIFAR VGG: 3x3 'same' convs with BN and ReLU, 2x2 max pools, one dense classifier.

    Parameters
    ----------
    depth : {11, 13, 16, 19}
        The configuration (convolutions plus the classifier).
    input_shape : sequence of int
        ``(C, H, W)``.
    classes : int
        Output units.

    Returns
    -------
    Architecture
        Convolutions ``conv1`` ... ``convK`` and the dense layer ``fc``.

    Raises
    ------
    KeyError
        For another depth.

    See Also
    --------
    get_arch : Every zoo network by name, with its reference input shape and classes.

    Examples
    --------
    >>> vgg(16).total_params, vgg(19, classes=100).total_params
    (14715584, 20070080)
    """
    b = ArchBuilder(f"vgg-{depth}", input_shape)
    k = 0
    for item in _VGG[depth]:
        if item == "M":
            b.pool("max", 2)
        else:
            k += 1
            b.conv(item, 3, padding=1, name=f"conv{k}", batchnorm=True, relu=True)
    if b.last.shape[1:] != (1, 1):
        b.global_pool(name="gap")
    b.flatten(name="flatten")
    b.dense(classes, name="fc")
    return b.build()


def _basic_block(b: ArchBuilder, prefix: str, width: int, stride: int) -> None:
    x = b.last
    b.conv(width, 3, stride=stride, padding=1, name=f"{prefix}.conv1", batchnorm=True, relu=True)
    b.conv(width, 3, padding=1, name=f"{prefix}.conv2", batchnorm=True)
    if stride != 1 or x.channels != width:
        short = b.conv(width, 1, stride=stride, src=x.name, name=f"{prefix}.shortcut",
                       batchnorm=True)
    else:
        short = x.name
    b.add([f"{prefix}.conv2", short], name=f"{prefix}.add", relu=True)


def resnet(depth: int, input_shape=None, classes=None) -> Architecture:
    """ResNet-18 (3x3 stride-1 stem, no max-pool) or the CIFAR ResNet-20/32/56.

    Basic blocks with residual adds, 1x1 projection shortcuts where the width or the stride
    changes, global average pooling and a dense classifier (``docs/architectures.md``).

    Parameters
    ----------
    depth : {18, 20, 32, 56}
        The network.
    input_shape : sequence of int, optional
        Default: 3x64x64 for ResNet-18 (Tiny ImageNet), 3x32x32 for the CIFAR ResNets.
    classes : int, optional
        Default: 200 for ResNet-18, 10 for the CIFAR ResNets.

    Returns
    -------
    Architecture
        Layers named ``conv1``, ``layer{stage}.{block}.conv1``, ``.conv2``, ``.shortcut`` and
        ``fc``.

    Raises
    ------
    KeyError
        For another depth.

    See Also
    --------
    get_arch : Every zoo network by name, with its reference input shape and classes.

    Examples
    --------
    >>> resnet(20).total_params, resnet(18).input_shape, resnet(18).output.shape
    (270896, (3, 64, 64), (200,))
    """
    name = f"resnet-{depth}"
    shape, n_cls = _DEFAULTS[name]
    input_shape = input_shape or shape
    classes = classes or n_cls
    b = ArchBuilder(name, input_shape)
    if depth == 18:
        b.conv(64, 3, padding=1, name="conv1", batchnorm=True, relu=True)
        widths, strides = [64, 64, 128, 128, 256, 256, 512, 512], [1, 1, 2, 1, 2, 1, 2, 1]
        per_stage = 2
    else:
        b.conv(16, 3, padding=1, name="conv1", batchnorm=True, relu=True)
        n = _CIFAR_RESNET_BLOCKS[depth]
        widths = [16] * n + [32] * n + [64] * n
        strides = [1] * n + ([2] + [1] * (n - 1)) * 2
        per_stage = n
    for k, (w, s) in enumerate(zip(widths, strides, strict=True)):
        _basic_block(b, f"layer{k // per_stage + 1}.{k % per_stage}", w, s)
    b.global_pool(name="gap")
    b.flatten(name="flatten")
    b.dense(classes, name="fc")
    return b.build()


def _inverted_residual(b: ArchBuilder, prefix: str, expansion: int, out: int, stride: int) -> None:
    x = b.last
    hidden = expansion * x.channels
    b.conv(hidden, 1, name=f"{prefix}.expand", batchnorm=True, relu=True)
    b.conv(hidden, 3, stride=stride, padding=1, groups=hidden, name=f"{prefix}.depthwise",
           batchnorm=True, relu=True)
    b.conv(out, 1, name=f"{prefix}.project", batchnorm=True)
    if stride == 1:
        short = x.name if x.channels == out else b.conv(
            out, 1, src=x.name, name=f"{prefix}.shortcut", batchnorm=True)
        b.add([f"{prefix}.project", short], name=f"{prefix}.add")


def mobilenet_v2(input_shape=(3, 32, 32), classes=10) -> Architecture:
    """MobileNetV2 for CIFAR (Sandler et al. 2018).

    A stride-1 3x3 stem with 32 channels, inverted residual blocks (1x1 expansion, depthwise 3x3,
    linear 1x1 projection; a residual add whenever the stride is 1, through a 1x1 conv where the
    width changes), a 1x1 conv to 1280 channels, global average pooling and the classifier. ReLU
    stands for ReLU6 (connectivity is the same).

    Parameters
    ----------
    input_shape : sequence of int
        ``(C, H, W)``.
    classes : int
        Output units.

    Returns
    -------
    Architecture
        2,261,824 prunable weights at the defaults.

    See Also
    --------
    get_arch : Every zoo network by name, with its reference input shape and classes.

    Examples
    --------
    >>> arch = mobilenet_v2()
    >>> arch.total_params, arch["block2.1.depthwise"].groups
    (2261824, 144)
    """
    b = ArchBuilder("mobilenet-v2", input_shape)
    b.conv(32, 3, padding=1, name="conv1", batchnorm=True, relu=True)
    for k, (expansion, out, blocks, stride) in enumerate(_MOBILENET_V2):
        for j in range(blocks):
            _inverted_residual(b, f"block{k + 1}.{j}", expansion, out, stride if j == 0 else 1)
    b.conv(1280, 1, name="conv2", batchnorm=True, relu=True)
    b.global_pool(name="gap")
    b.flatten(name="flatten")
    b.dense(classes, name="fc")
    return b.build()


def get_arch(name: str, input_shape=None, classes: int | None = None) -> Architecture:
    """Return a zoo architecture by name, or read a spec file when ``name`` is a path.

    Parameters
    ----------
    name : str
        One of ``lenet-300-100, dbsn-mlp, lenet-5, vgg-11, vgg-13, vgg-16, vgg-19, resnet-18, resnet-20,
        resnet-32, resnet-56, mobilenet-v2``, an MLP as ``mlp:784-300-100-10``, or a path to a ``.toml`` /
        ``.json`` spec file (see :func:`connsim.architectures.load_arch`).
    input_shape : sequence of int, optional
        ``(C, H, W)`` or ``(n,)``; defaults to the reference setup of the architecture.
    classes : int, optional
        Number of output units; defaults to the reference setup.

    Returns
    -------
    Architecture
        The network, with the reference setup's input shape and classes unless given.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or shapes that do not fit.

    See Also
    --------
    connsim.architectures.load_arch : Read a spec file.
    mlp, lenet_300_100, lenet_5, vgg, resnet, mobilenet_v2 : The zoo's builders.

    Examples
    --------
    >>> get_arch("vgg-19", classes=100).total_params
    20070080
    >>> get_arch("mlp:784-300-100-10").total_params
    266200
    """
    key = name.strip().lower()
    if key.endswith((".toml", ".json")) or os.path.sep in key:
        if input_shape is not None or classes is not None:
            raise ValueError("input_shape and classes cannot override a spec file; edit the file")
        return load_arch(name)
    if key.startswith("mlp:"):
        try:
            widths = [int(w) for w in key[4:].split("-")]
        except ValueError:
            raise ValueError(f"MLP names look like 'mlp:784-300-100-10', got {name!r}") from None
        if classes is not None:
            widths[-1] = int(classes)
        return mlp(widths, input_shape, name=key if classes is None else None)
    if key not in _DEFAULTS:
        raise ValueError(f"unknown architecture {name!r}; valid names: {', '.join(ZOO)}")
    shape, n_cls = _DEFAULTS[key]
    shape = tuple(input_shape) if input_shape is not None else shape
    classes = int(classes) if classes is not None else n_cls
    if classes <= 0:
        raise ValueError(f"classes must be a positive integer, got {classes}")
    if key == "lenet-300-100":
        return lenet_300_100(shape, classes)
    if key == "lenet-5":
        return lenet_5(shape, classes)
    if key == "dbsn-mlp":
        return dbsn_mlp(shape, classes)
    if key.startswith("vgg-"):
        return vgg(int(key[4:]), shape, classes)
    if key == "mobilenet-v2":
        return mobilenet_v2(shape, classes)
    return resnet(int(key[7:]), shape, classes)
